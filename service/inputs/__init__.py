"""Decode and validate request bodies into the arrays the models take.

Everything here raises ``RequestError`` subclasses with the field, item and expectation at
fault; nothing here touches a model, so a bad request never reaches a batch.
"""
