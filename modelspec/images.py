"""Pictures as a person sees them: what every image contract does before its own steps."""

from PIL import Image, ImageOps

ORIENTATION = 0x0112  # the EXIF tag; 1 is "as stored"


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (phones store photos sideways and set
    the tag); unchanged without the tag. A malformed EXIF block is ignored, not fatal: the
    pixels are still the picture."""
    try:
        if image.getexif().get(ORIENTATION, 1) == 1:
            return image  # the common case, without the copy exif_transpose would make
        return ImageOps.exif_transpose(image)
    except (AttributeError, KeyError, OSError, SyntaxError, TypeError, ValueError):
        return image
