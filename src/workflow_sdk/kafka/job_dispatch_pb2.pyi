from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobDispatchEvent(_message.Message):
    __slots__ = ("schema_version", "dedup_id", "job_id", "instance_id", "step_execution_id", "job_type", "retries_remaining", "job_payload", "created_at")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEDUP_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    RETRIES_REMAINING_FIELD_NUMBER: _ClassVar[int]
    JOB_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    dedup_id: str
    job_id: str
    instance_id: str
    step_execution_id: str
    job_type: str
    retries_remaining: int
    job_payload: bytes
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, schema_version: _Optional[int] = ..., dedup_id: _Optional[str] = ..., job_id: _Optional[str] = ..., instance_id: _Optional[str] = ..., step_execution_id: _Optional[str] = ..., job_type: _Optional[str] = ..., retries_remaining: _Optional[int] = ..., job_payload: _Optional[bytes] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
