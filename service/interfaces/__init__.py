"""Each input kind and answer of ``modelspec.interfaces``, by name."""

from service.interfaces.answers import Code, Decision, DigitAnswer, ImageAnswer, TopLabels
from service.interfaces.base import Answer, Incoming, InputKind, Tensor
from service.interfaces.images import MnistImage, RgbPhoto
from service.interfaces.records import BankRecord
from service.interfaces.tensors import TensorAnswer, TensorInput

INPUT_KINDS: dict[str, InputKind] = {
    kind.name: kind for kind in (TensorInput(), MnistImage(), RgbPhoto(), BankRecord())
}
ANSWERS: dict[str, Answer] = {
    answer.name: answer
    for answer in (TensorAnswer(), DigitAnswer(), TopLabels(), Decision(), Code(), ImageAnswer())
}
TENSOR_INPUT, TENSOR_ANSWER = INPUT_KINDS["tensor"], ANSWERS["tensor"]

__all__ = [
    "ANSWERS",
    "INPUT_KINDS",
    "TENSOR_ANSWER",
    "TENSOR_INPUT",
    "Answer",
    "Incoming",
    "InputKind",
    "Tensor",
]
