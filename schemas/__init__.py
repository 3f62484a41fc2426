"""Table definitions and the batch codec every process shares."""
from schemas.registry import Column, Schema, Registry, SchemaError, load_registry
from schemas.codec import CodecError, Header, encode, decode, validate, peek

__all__ = ["Column", "Schema", "Registry", "SchemaError", "load_registry",
           "CodecError", "Header", "encode", "decode", "validate", "peek"]
