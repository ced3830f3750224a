from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeliveryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_STATUS_UNSPECIFIED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_PENDING: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_ACKED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_EXPIRED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_PURGED: _ClassVar[DeliveryStatus]
DELIVERY_STATUS_UNSPECIFIED: DeliveryStatus
DELIVERY_STATUS_PENDING: DeliveryStatus
DELIVERY_STATUS_ACKED: DeliveryStatus
DELIVERY_STATUS_EXPIRED: DeliveryStatus
DELIVERY_STATUS_PURGED: DeliveryStatus

class AuthorizeRequest(_message.Message):
    __slots__ = ("namespace", "auth_json", "headers", "query", "remote_addr", "node_id")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class QueryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AUTH_JSON_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDR_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    auth_json: str
    headers: _containers.ScalarMap[str, str]
    query: _containers.ScalarMap[str, str]
    remote_addr: str
    node_id: str
    def __init__(self, namespace: _Optional[str] = ..., auth_json: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., query: _Optional[_Mapping[str, str]] = ..., remote_addr: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class AuthorizeResponse(_message.Message):
    __slots__ = ("allow", "message", "user_id", "rooms", "data_json")
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    allow: bool
    message: str
    user_id: str
    rooms: _containers.RepeatedScalarFieldContainer[str]
    data_json: str
    def __init__(self, allow: _Optional[bool] = ..., message: _Optional[str] = ..., user_id: _Optional[str] = ..., rooms: _Optional[_Iterable[str]] = ..., data_json: _Optional[str] = ...) -> None: ...

class Selector(_message.Message):
    __slots__ = ("namespace", "rooms", "socket_ids", "except_rooms", "except_socket_ids", "user_ids")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    SOCKET_IDS_FIELD_NUMBER: _ClassVar[int]
    EXCEPT_ROOMS_FIELD_NUMBER: _ClassVar[int]
    EXCEPT_SOCKET_IDS_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    rooms: _containers.RepeatedScalarFieldContainer[str]
    socket_ids: _containers.RepeatedScalarFieldContainer[str]
    except_rooms: _containers.RepeatedScalarFieldContainer[str]
    except_socket_ids: _containers.RepeatedScalarFieldContainer[str]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespace: _Optional[str] = ..., rooms: _Optional[_Iterable[str]] = ..., socket_ids: _Optional[_Iterable[str]] = ..., except_rooms: _Optional[_Iterable[str]] = ..., except_socket_ids: _Optional[_Iterable[str]] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EmitRequest(_message.Message):
    __slots__ = ("to", "event", "args_json", "attachments", "volatile", "at_least_once", "ttl_ms")
    TO_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    VOLATILE_FIELD_NUMBER: _ClassVar[int]
    AT_LEAST_ONCE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    to: Selector
    event: str
    args_json: str
    attachments: _containers.RepeatedScalarFieldContainer[bytes]
    volatile: bool
    at_least_once: bool
    ttl_ms: int
    def __init__(self, to: _Optional[_Union[Selector, _Mapping]] = ..., event: _Optional[str] = ..., args_json: _Optional[str] = ..., attachments: _Optional[_Iterable[bytes]] = ..., volatile: _Optional[bool] = ..., at_least_once: _Optional[bool] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class EmitResponse(_message.Message):
    __slots__ = ("message_id",)
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    def __init__(self, message_id: _Optional[str] = ...) -> None: ...

class EmitStreamResponse(_message.Message):
    __slots__ = ("emitted",)
    EMITTED_FIELD_NUMBER: _ClassVar[int]
    emitted: int
    def __init__(self, emitted: _Optional[int] = ...) -> None: ...

class RoomsRequest(_message.Message):
    __slots__ = ("target", "rooms")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    target: Selector
    rooms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, target: _Optional[_Union[Selector, _Mapping]] = ..., rooms: _Optional[_Iterable[str]] = ...) -> None: ...

class RoomsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConsumeEventsRequest(_message.Message):
    __slots__ = ("namespace", "events", "group")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    events: _containers.RepeatedScalarFieldContainer[str]
    group: str
    def __init__(self, namespace: _Optional[str] = ..., events: _Optional[_Iterable[str]] = ..., group: _Optional[str] = ...) -> None: ...

class WatchConnectionsRequest(_message.Message):
    __slots__ = ("namespace", "group")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    group: str
    def __init__(self, namespace: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class ConnectionEvent(_message.Message):
    __slots__ = ("kind", "socket_id", "user_id", "namespace", "node_id", "at_ms", "rooms", "auth_json", "query", "headers", "remote_addr", "transport", "data_json", "recovered", "reason")
    class QueryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOCKET_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    AUTH_JSON_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDR_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    socket_id: str
    user_id: str
    namespace: str
    node_id: str
    at_ms: int
    rooms: _containers.RepeatedScalarFieldContainer[str]
    auth_json: str
    query: _containers.ScalarMap[str, str]
    headers: _containers.ScalarMap[str, str]
    remote_addr: str
    transport: str
    data_json: str
    recovered: bool
    reason: str
    def __init__(self, kind: _Optional[str] = ..., socket_id: _Optional[str] = ..., user_id: _Optional[str] = ..., namespace: _Optional[str] = ..., node_id: _Optional[str] = ..., at_ms: _Optional[int] = ..., rooms: _Optional[_Iterable[str]] = ..., auth_json: _Optional[str] = ..., query: _Optional[_Mapping[str, str]] = ..., headers: _Optional[_Mapping[str, str]] = ..., remote_addr: _Optional[str] = ..., transport: _Optional[str] = ..., data_json: _Optional[str] = ..., recovered: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ClientEvent(_message.Message):
    __slots__ = ("socket_id", "user_id", "namespace", "event", "args_json", "attachments", "ack_id", "reply_to", "received_at_ms")
    SOCKET_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    socket_id: str
    user_id: str
    namespace: str
    event: str
    args_json: str
    attachments: _containers.RepeatedScalarFieldContainer[bytes]
    ack_id: int
    reply_to: str
    received_at_ms: int
    def __init__(self, socket_id: _Optional[str] = ..., user_id: _Optional[str] = ..., namespace: _Optional[str] = ..., event: _Optional[str] = ..., args_json: _Optional[str] = ..., attachments: _Optional[_Iterable[bytes]] = ..., ack_id: _Optional[int] = ..., reply_to: _Optional[str] = ..., received_at_ms: _Optional[int] = ...) -> None: ...

class ReplyRequest(_message.Message):
    __slots__ = ("reply_to", "socket_id", "namespace", "ack_id", "args_json", "attachments")
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    SOCKET_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    reply_to: str
    socket_id: str
    namespace: str
    ack_id: int
    args_json: str
    attachments: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, reply_to: _Optional[str] = ..., socket_id: _Optional[str] = ..., namespace: _Optional[str] = ..., ack_id: _Optional[int] = ..., args_json: _Optional[str] = ..., attachments: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ReplyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EmitWithAckRequest(_message.Message):
    __slots__ = ("to", "event", "args_json", "attachments", "timeout_ms")
    TO_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    to: Selector
    event: str
    args_json: str
    attachments: _containers.RepeatedScalarFieldContainer[bytes]
    timeout_ms: int
    def __init__(self, to: _Optional[_Union[Selector, _Mapping]] = ..., event: _Optional[str] = ..., args_json: _Optional[str] = ..., attachments: _Optional[_Iterable[bytes]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class AckResult(_message.Message):
    __slots__ = ("socket_id", "node_id", "acked", "args_json", "attachments")
    SOCKET_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    socket_id: str
    node_id: str
    acked: bool
    args_json: str
    attachments: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, socket_id: _Optional[str] = ..., node_id: _Optional[str] = ..., acked: _Optional[bool] = ..., args_json: _Optional[str] = ..., attachments: _Optional[_Iterable[bytes]] = ...) -> None: ...

class EmitWithAckResponse(_message.Message):
    __slots__ = ("results", "complete")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AckResult]
    complete: bool
    def __init__(self, results: _Optional[_Iterable[_Union[AckResult, _Mapping]]] = ..., complete: _Optional[bool] = ...) -> None: ...

class DisconnectSocketsRequest(_message.Message):
    __slots__ = ("target", "close")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    target: Selector
    close: bool
    def __init__(self, target: _Optional[_Union[Selector, _Mapping]] = ..., close: _Optional[bool] = ...) -> None: ...

class DisconnectSocketsResponse(_message.Message):
    __slots__ = ("disconnected",)
    DISCONNECTED_FIELD_NUMBER: _ClassVar[int]
    disconnected: int
    def __init__(self, disconnected: _Optional[int] = ...) -> None: ...

class FetchSocketsRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: Selector
    def __init__(self, target: _Optional[_Union[Selector, _Mapping]] = ...) -> None: ...

class SocketInfo(_message.Message):
    __slots__ = ("id", "user_id", "namespace", "node_id", "rooms", "connected_at_ms", "remote_addr", "transport", "query", "headers", "data_json")
    class QueryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDR_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    namespace: str
    node_id: str
    rooms: _containers.RepeatedScalarFieldContainer[str]
    connected_at_ms: int
    remote_addr: str
    transport: str
    query: _containers.ScalarMap[str, str]
    headers: _containers.ScalarMap[str, str]
    data_json: str
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., namespace: _Optional[str] = ..., node_id: _Optional[str] = ..., rooms: _Optional[_Iterable[str]] = ..., connected_at_ms: _Optional[int] = ..., remote_addr: _Optional[str] = ..., transport: _Optional[str] = ..., query: _Optional[_Mapping[str, str]] = ..., headers: _Optional[_Mapping[str, str]] = ..., data_json: _Optional[str] = ...) -> None: ...

class FetchSocketsResponse(_message.Message):
    __slots__ = ("sockets",)
    SOCKETS_FIELD_NUMBER: _ClassVar[int]
    sockets: _containers.RepeatedCompositeFieldContainer[SocketInfo]
    def __init__(self, sockets: _Optional[_Iterable[_Union[SocketInfo, _Mapping]]] = ...) -> None: ...

class ListRoomsRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class RoomInfo(_message.Message):
    __slots__ = ("name", "members")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    members: int
    def __init__(self, name: _Optional[str] = ..., members: _Optional[int] = ...) -> None: ...

class ListRoomsResponse(_message.Message):
    __slots__ = ("rooms",)
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    rooms: _containers.RepeatedCompositeFieldContainer[RoomInfo]
    def __init__(self, rooms: _Optional[_Iterable[_Union[RoomInfo, _Mapping]]] = ...) -> None: ...

class GetPresenceRequest(_message.Message):
    __slots__ = ("user_ids", "room", "namespace")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    room: str
    namespace: str
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ..., room: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class UserPresence(_message.Message):
    __slots__ = ("user_id", "online", "last_seen_ms", "sockets")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    SOCKETS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    online: bool
    last_seen_ms: int
    sockets: int
    def __init__(self, user_id: _Optional[str] = ..., online: _Optional[bool] = ..., last_seen_ms: _Optional[int] = ..., sockets: _Optional[int] = ...) -> None: ...

class GetPresenceResponse(_message.Message):
    __slots__ = ("users", "room_user_ids", "room_sockets")
    USERS_FIELD_NUMBER: _ClassVar[int]
    ROOM_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    ROOM_SOCKETS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[UserPresence]
    room_user_ids: _containers.RepeatedScalarFieldContainer[str]
    room_sockets: _containers.RepeatedCompositeFieldContainer[SocketInfo]
    def __init__(self, users: _Optional[_Iterable[_Union[UserPresence, _Mapping]]] = ..., room_user_ids: _Optional[_Iterable[str]] = ..., room_sockets: _Optional[_Iterable[_Union[SocketInfo, _Mapping]]] = ...) -> None: ...

class WatchPresenceRequest(_message.Message):
    __slots__ = ("namespace", "room", "user_ids")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    room: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespace: _Optional[str] = ..., room: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PresenceEvent(_message.Message):
    __slots__ = ("kind", "user_id", "socket_id", "namespace", "node_id", "rooms", "at_ms", "last_seen_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SOCKET_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    user_id: str
    socket_id: str
    namespace: str
    node_id: str
    rooms: _containers.RepeatedScalarFieldContainer[str]
    at_ms: int
    last_seen_ms: int
    def __init__(self, kind: _Optional[str] = ..., user_id: _Optional[str] = ..., socket_id: _Optional[str] = ..., namespace: _Optional[str] = ..., node_id: _Optional[str] = ..., rooms: _Optional[_Iterable[str]] = ..., at_ms: _Optional[int] = ..., last_seen_ms: _Optional[int] = ...) -> None: ...

class GetDeliveryRequest(_message.Message):
    __slots__ = ("message_id",)
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    def __init__(self, message_id: _Optional[str] = ...) -> None: ...

class RecipientDelivery(_message.Message):
    __slots__ = ("user_id", "socket_id", "status", "done_at_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SOCKET_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DONE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    socket_id: str
    status: DeliveryStatus
    done_at_ms: int
    def __init__(self, user_id: _Optional[str] = ..., socket_id: _Optional[str] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ..., done_at_ms: _Optional[int] = ...) -> None: ...

class GetDeliveryResponse(_message.Message):
    __slots__ = ("message_id", "namespace", "event", "status", "recipients", "created_at_ms", "expires_at_ms")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    namespace: str
    event: str
    status: DeliveryStatus
    recipients: _containers.RepeatedCompositeFieldContainer[RecipientDelivery]
    created_at_ms: int
    expires_at_ms: int
    def __init__(self, message_id: _Optional[str] = ..., namespace: _Optional[str] = ..., event: _Optional[str] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ..., recipients: _Optional[_Iterable[_Union[RecipientDelivery, _Mapping]]] = ..., created_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class GetInboxRequest(_message.Message):
    __slots__ = ("namespace", "user_id", "socket_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SOCKET_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    user_id: str
    socket_id: str
    def __init__(self, namespace: _Optional[str] = ..., user_id: _Optional[str] = ..., socket_id: _Optional[str] = ...) -> None: ...

class InboxEntry(_message.Message):
    __slots__ = ("message_id", "event", "args_json", "attachments", "created_at_ms", "expires_at_ms")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    event: str
    args_json: str
    attachments: int
    created_at_ms: int
    expires_at_ms: int
    def __init__(self, message_id: _Optional[str] = ..., event: _Optional[str] = ..., args_json: _Optional[str] = ..., attachments: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class GetInboxResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[InboxEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[InboxEntry, _Mapping]]] = ...) -> None: ...

class PurgeInboxRequest(_message.Message):
    __slots__ = ("namespace", "user_id", "socket_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SOCKET_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    user_id: str
    socket_id: str
    def __init__(self, namespace: _Optional[str] = ..., user_id: _Optional[str] = ..., socket_id: _Optional[str] = ...) -> None: ...

class PurgeInboxResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...
