//! JSON-RPC 2.0 as MCP clients send it: what kind of message arrived, which scope its method
//! needs (DESIGN.md section 5), and error bodies with the standard codes.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::era;
use crate::domain::Scope;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INTERNAL_ERROR: i64 = -32603;

/// The MCP revisions the gateway serves (`MCP-Protocol-Version`), newest first.
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Methods a key with `mcp:read` may call; every other method needs `mcp:write`.
const READ_METHODS: [&str; 11] = [
    "initialize",
    "server/discover",
    "subscriptions/listen",
    "ping",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
];

/// Notifications a client sends to run the protocol itself (MCP 2025-11-25); they ask the
/// server to do nothing a read-only key may not.
const CLIENT_NOTIFICATIONS: [&str; 4] = [
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request: it has an id and expects a response. What its `params._meta` declares under
    /// the 2026-07-28 revision is read apart from its params (`Declared`).
    Request { id: Value, method: String, params: Option<Value>, declared: Option<Box<Declared>> },
    /// A notification: a method without an id.
    Notification { method: String },
    /// The client's answer to a request of the server (sampling, elicitation, roots).
    Response { id: Value },
}

/// The members of a request's `params._meta` that only the 2026-07-28 revision defines
/// (`io.modelcontextprotocol/...`), taken out of the params as the message is read: they are
/// looked up on every modern request, and a legacy upstream never gets them (an upstream of
/// that revision gets the client's body as it came). The log level is dropped: the gateway
/// has no use for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared {
    pub version: Option<Value>,
    pub capabilities: Option<Value>,
    pub client_info: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    /// The request's id, when it could be read.
    pub id: Value,
    /// What the error's code defines as its `data` (boxed: errors travel in `Result`s).
    pub data: Option<Box<Value>>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into(), id: Value::Null, data: None }
    }

    pub fn body(&self) -> Value {
        let mut body = error_body(&self.id, self.code, &self.message);
        if let Some(data) = &self.data {
            body["error"]["data"] = (**data).clone();
        }
        body
    }
}

pub fn error_body(id: &Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

/// Reads one client message: malformed JSON is -32700, anything that is not a JSON-RPC 2.0
/// object is -32600.
pub fn parse(body: &[u8]) -> Result<Message, RpcError> {
    let envelope: ObjectOr<Envelope> =
        serde_json::from_slice(body).map_err(|e| RpcError::new(PARSE_ERROR, format!("Parse error: {e}")))?;
    let ObjectOr::Object(Envelope { version_is_2_0, id, method, params, answers }) = envelope else {
        return Err(RpcError::new(INVALID_REQUEST, "Invalid Request: expected a JSON-RPC 2.0 object"));
    };
    let shown_id = id.clone().unwrap_or(Value::Null);
    let invalid =
        |message: &str| RpcError { id: shown_id.clone(), ..RpcError::new(INVALID_REQUEST, message) };
    if !version_is_2_0 {
        return Err(invalid("Invalid Request: \"jsonrpc\" must be \"2.0\""));
    }
    if id.as_ref().is_some_and(|id| !(id.is_string() || id.is_i64() || id.is_u64())) {
        return Err(invalid("Invalid Request: \"id\" must be a string or an integer"));
    }
    let (params, declared) = match params {
        Some(ObjectOr::Object(ParamsObject { members, declared })) => {
            (Some(Value::Object(members)), declared)
        }
        Some(ObjectOr::Other(params)) => (Some(params), None),
        None => (None, None),
    };
    match (method, id) {
        (Some(Value::String(method)), Some(id)) => Ok(Message::Request { id, method, params, declared }),
        (Some(Value::String(method)), None) => Ok(Message::Notification { method }),
        (Some(_), _) => Err(invalid("Invalid Request: \"method\" must be a string")),
        (None, Some(id)) if answers => Ok(Message::Response { id }),
        (None, _) => Err(invalid("Invalid Request: neither a request, a notification nor a response")),
    }
}

/// A message's members as `parse` reads them, straight from the text: the top-level object is
/// not built as a map first (each message costs its keys' allocations otherwise). As in a map,
/// a member given twice counts as its last.
struct Envelope {
    version_is_2_0: bool,
    id: Option<Value>,
    method: Option<Value>,
    params: Option<Params>,
    /// It has a `result` or an `error`.
    answers: bool,
}

/// The members of a message that mean something to the gateway.
enum Member {
    Version,
    Id,
    Method,
    Params,
    Answer,
    Other,
}

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Member, D::Error> {
        deserializer.deserialize_str(NameVisitor(|name: &str| match name {
            "jsonrpc" => Member::Version,
            "id" => Member::Id,
            "method" => Member::Method,
            "params" => Member::Params,
            "result" | "error" => Member::Answer,
            _ => Member::Other,
        }))
    }
}

/// A JSON value as a visitor reads it: an object by what `ReadObject` takes from its members,
/// any other value kept as it is.
enum ObjectOr<T> {
    Object(T),
    Other(Value),
}

/// What is taken from an object's members as they are read.
trait ReadObject<'de>: Sized {
    fn read<A: serde::de::MapAccess<'de>>(members: A) -> Result<Self, A::Error>;
}

impl<'de, T: ReadObject<'de>> serde::Deserialize<'de> for ObjectOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ObjectOr<T>, D::Error> {
        deserializer.deserialize_any(ObjectOrVisitor(std::marker::PhantomData))
    }
}

struct ObjectOrVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: ReadObject<'de>> serde::de::Visitor<'de> for ObjectOrVisitor<T> {
    type Value = ObjectOr<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, members: A) -> Result<ObjectOr<T>, A::Error> {
        Ok(ObjectOr::Object(T::read(members)?))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, items: A) -> Result<ObjectOr<T>, A::Error> {
        Ok(ObjectOr::Other(Value::deserialize(serde::de::value::SeqAccessDeserializer::new(items))?))
    }

    fn visit_bool<E>(self, value: bool) -> Result<ObjectOr<T>, E> {
        Ok(ObjectOr::Other(Value::Bool(value)))
    }

    fn visit_i64<E>(self, value: i64) -> Result<ObjectOr<T>, E> {
        Ok(ObjectOr::Other(Value::from(value)))
    }

    fn visit_u64<E>(self, value: u64) -> Result<ObjectOr<T>, E> {
        Ok(ObjectOr::Other(Value::from(value)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<ObjectOr<T>, E> {
        Ok(ObjectOr::Other(Value::from(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<ObjectOr<T>, E> {
        Ok(ObjectOr::Other(Value::from(value)))
    }

    fn visit_unit<E>(self) -> Result<ObjectOr<T>, E> {
        Ok(ObjectOr::Other(Value::Null))
    }
}

/// Reads a member's name as the function given sorts it (escaped or not).
struct NameVisitor<F>(F);

impl<T, F: FnOnce(&str) -> T> serde::de::Visitor<'_> for NameVisitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, name: &str) -> Result<T, E> {
        Ok((self.0)(name))
    }
}

/// A message's params (any value: the method's handler judges them).
type Params = ObjectOr<ParamsObject>;

/// Params that are an object, with what their `_meta` declares under 2026-07-28 taken out: a
/// `_meta` that held nothing else is not kept.
struct ParamsObject {
    members: Map<String, Value>,
    declared: Option<Box<Declared>>,
}

/// A member of params: their `_meta`, or another by its name.
enum ParamsMember {
    Meta,
    Other(String),
}

impl<'de> serde::Deserialize<'de> for ParamsMember {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ParamsMember, D::Error> {
        deserializer.deserialize_str(NameVisitor(|name: &str| match name {
            "_meta" => ParamsMember::Meta,
            _ => ParamsMember::Other(name.to_owned()),
        }))
    }
}

impl<'de> ReadObject<'de> for ParamsObject {
    fn read<A: serde::de::MapAccess<'de>>(mut members: A) -> Result<ParamsObject, A::Error> {
        let mut params = ParamsObject { members: Map::new(), declared: None };
        while let Some(member) = members.next_key::<ParamsMember>()? {
            match member {
                ParamsMember::Other(name) => {
                    params.members.insert(name, members.next_value()?);
                }
                // (Given twice, the last counts, whole.)
                ParamsMember::Meta => {
                    let kept = match members.next_value::<ObjectOr<MetaObject>>()? {
                        ObjectOr::Object(MetaObject { declared, others }) => {
                            let declares = declared != Declared::default();
                            params.declared = declares.then(|| Box::new(declared));
                            (!declares || !others.is_empty()).then_some(Value::Object(others))
                        }
                        ObjectOr::Other(other) => {
                            params.declared = None;
                            Some(other)
                        }
                    };
                    match kept {
                        Some(meta) => params.members.insert("_meta".to_owned(), meta),
                        None => params.members.remove("_meta"),
                    };
                }
            }
        }
        Ok(params)
    }
}

/// A `_meta` that is an object: the members it declares, and the others.
struct MetaObject {
    declared: Declared,
    others: Map<String, Value>,
}

/// A member of params' `_meta`.
enum MetaMember {
    Version,
    Capabilities,
    ClientInfo,
    LogLevel,
    Other(String),
}

impl<'de> serde::Deserialize<'de> for MetaMember {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<MetaMember, D::Error> {
        deserializer.deserialize_str(NameVisitor(|name: &str| match name {
            era::META_VERSION => MetaMember::Version,
            era::META_CAPABILITIES => MetaMember::Capabilities,
            era::META_CLIENT_INFO => MetaMember::ClientInfo,
            era::META_LOG_LEVEL => MetaMember::LogLevel,
            _ => MetaMember::Other(name.to_owned()),
        }))
    }
}

impl<'de> ReadObject<'de> for MetaObject {
    fn read<A: serde::de::MapAccess<'de>>(mut members: A) -> Result<MetaObject, A::Error> {
        let mut meta = MetaObject { declared: Declared::default(), others: Map::new() };
        while let Some(member) = members.next_key::<MetaMember>()? {
            match member {
                MetaMember::Version => meta.declared.version = Some(members.next_value()?),
                MetaMember::Capabilities => meta.declared.capabilities = Some(members.next_value()?),
                MetaMember::ClientInfo => meta.declared.client_info = Some(members.next_value()?),
                MetaMember::LogLevel => {
                    members.next_value::<serde::de::IgnoredAny>()?;
                }
                MetaMember::Other(name) => {
                    meta.others.insert(name, members.next_value()?);
                }
            }
        }
        Ok(meta)
    }
}

impl<'de> ReadObject<'de> for Envelope {
    fn read<A: serde::de::MapAccess<'de>>(mut members: A) -> Result<Envelope, A::Error> {
        use serde::de::IgnoredAny;
        let mut envelope =
            Envelope { version_is_2_0: false, id: None, method: None, params: None, answers: false };
        while let Some(member) = members.next_key::<Member>()? {
            match member {
                Member::Version => envelope.version_is_2_0 = members.next_value::<Value>()? == "2.0",
                Member::Id => envelope.id = Some(members.next_value()?),
                Member::Method => envelope.method = Some(members.next_value()?),
                Member::Params => envelope.params = Some(members.next_value()?),
                Member::Answer => {
                    members.next_value::<IgnoredAny>()?;
                    envelope.answers = true;
                }
                Member::Other => {
                    members.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(envelope)
    }
}

impl Message {
    /// The scope a key needs to send this message, by its method, whether or not it has an id:
    /// a `tools/call` sent as a notification still needs `mcp:write`. Answers to the server's
    /// requests, and the client notifications of the protocol itself, need only `mcp:read`.
    pub fn required_scope(&self) -> Scope {
        match self.method() {
            Some(method) if !READ_METHODS.contains(&method) && !CLIENT_NOTIFICATIONS.contains(&method) => {
                Scope::McpWrite
            }
            _ => Scope::McpRead,
        }
    }

    /// The id an answer must carry: a request's, or the one a client's response answers.
    pub fn id(&self) -> Option<&Value> {
        match self {
            Message::Request { id, .. } | Message::Response { id } => Some(id),
            Message::Notification { .. } => None,
        }
    }

    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method } => Some(method),
            Message::Response { .. } => None,
        }
    }

    /// The tool a `tools/call` names, for the request log.
    pub fn tool_name(&self) -> Option<&str> {
        match self {
            Message::Request { method, params: Some(params), .. } if method == "tools/call" => {
                params.get("name").and_then(Value::as_str)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_classified() {
        let request =
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#).unwrap();
        assert_eq!(request.method(), Some("tools/call"));
        assert_eq!(request.tool_name(), Some("echo"));
        assert_eq!(request.required_scope(), Scope::McpWrite);
        let list = parse(br#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#).unwrap();
        assert_eq!(list.required_scope(), Scope::McpRead);
        let note = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(note, Message::Notification { method: "notifications/initialized".into() });
        assert_eq!(note.required_scope(), Scope::McpRead);
        // A call is a call with or without an id.
        let call_note =
            parse(br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo"}}"#).unwrap();
        assert_eq!(call_note.required_scope(), Scope::McpWrite);
        let odd_note = parse(br#"{"jsonrpc":"2.0","method":"notifications/anything"}"#).unwrap();
        assert_eq!(odd_note.required_scope(), Scope::McpWrite);
        let cancelled =
            parse(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#).unwrap();
        assert_eq!(cancelled.required_scope(), Scope::McpRead);
        let answer = parse(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#).unwrap();
        assert_eq!(answer, Message::Response { id: json!(7) });
    }

    #[test]
    fn every_read_method_of_design_needs_only_read() {
        for method in [
            "initialize",
            "ping",
            "tools/list",
            "resources/list",
            "resources/read",
            "prompts/list",
            "prompts/get",
            "completion/complete",
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#);
            assert_eq!(parse(body.as_bytes()).unwrap().required_scope(), Scope::McpRead, "{method}");
        }
        for method in ["tools/call", "logging/setLevel", "resources/subscribe", "anything/else"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#);
            assert_eq!(parse(body.as_bytes()).unwrap().required_scope(), Scope::McpWrite, "{method}");
        }
    }

    #[test]
    fn bad_input_gets_the_standard_codes() {
        assert_eq!(parse(b"{not json").unwrap_err().code, PARSE_ERROR);
        for body in [
            &b"[]"[..],
            b"42",
            br#""x""#,
            br#"{"id":1,"method":"ping"}"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
        ] {
            assert_eq!(parse(body).unwrap_err().code, INVALID_REQUEST, "{}", String::from_utf8_lossy(body));
        }
        let no_method = parse(br#"{"jsonrpc":"2.0","id":3}"#).unwrap_err();
        assert_eq!((no_method.code, no_method.id.clone()), (INVALID_REQUEST, json!(3)));
        assert_eq!(no_method.body()["error"]["code"], INVALID_REQUEST);
        assert_eq!(parse(br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#).unwrap_err().code, INVALID_REQUEST);
        assert_eq!(parse(br#"{"jsonrpc":2,"id":1,"method":"ping"}"#).unwrap_err().code, INVALID_REQUEST);
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#).unwrap_err().code,
            INVALID_REQUEST
        );
        assert_eq!(parse(br#"{"jsonrpc":"2.0","id":1,"method":7}"#).unwrap_err().code, INVALID_REQUEST);
        assert_eq!(parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"} x"#).unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse(b"null").unwrap_err().code, INVALID_REQUEST);
    }

    #[test]
    fn members_are_read_as_a_map_would_hold_them() {
        // Escaped names, members given twice (the last counts), members of no meaning here.
        let request = parse(
            br#"{"jsonrpc":"1.0","\u006aso\u006erpc":"2.0","x":[1,{"y":null}],"id":1,"id":"b","method":"tools/call","params":{"name":"echo"}}"#,
        )
        .unwrap();
        assert_eq!(
            request,
            Message::Request {
                id: json!("b"),
                method: "tools/call".into(),
                params: Some(json!({"name":"echo"})),
                declared: None
            }
        );
        // A null result is still a result; null params are still params.
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":2,"result":null}"#).unwrap(),
            Message::Response { id: json!(2) }
        );
        let null_params = parse(br#"{"jsonrpc":"2.0","id":3,"method":"ping","params":null}"#).unwrap();
        assert_eq!(
            null_params,
            Message::Request {
                id: json!(3),
                method: "ping".into(),
                params: Some(Value::Null),
                declared: None
            }
        );
    }

    #[test]
    fn what_meta_declares_is_read_apart_from_the_params() {
        let params_and_declared = |body: &str| match parse(body.as_bytes()).unwrap() {
            Message::Request { params, declared, .. } => (params, declared.map(|d| *d)),
            other => panic!("{other:?}"),
        };
        let version = era::META_VERSION;
        // Every member it declares is taken out; the others stay, in their `_meta`.
        let (params, declared) = params_and_declared(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","_meta":{{
            "{version}":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{"roots":{{}}}},
            "io.modelcontextprotocol/clientInfo":{{"name":"c"}},"io.modelcontextprotocol/logLevel":"info",
            "progressToken":7}}}}}}"#
        ));
        assert_eq!(params, Some(json!({"name":"echo","_meta":{"progressToken":7}})));
        assert_eq!(
            declared,
            Some(Declared {
                version: Some(json!("2026-07-28")),
                capabilities: Some(json!({"roots":{}})),
                client_info: Some(json!({"name":"c"}))
            })
        );
        // A `_meta` that held only what it declares is gone; an escaped name is its name.
        let (params, declared) = params_and_declared(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol\/protocolVersion":7}}}"#,
        );
        assert_eq!(params, Some(json!({})));
        assert_eq!(declared.and_then(|d| d.version), Some(json!(7)));
        // Nothing declared: the params are as they came, whatever `_meta` is.
        for meta in [json!({}), json!({"progressToken":1}), json!("x"), json!(null), json!([1, {"a":2}])] {
            let body = json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":meta}}).to_string();
            assert_eq!(params_and_declared(&body), (Some(json!({"_meta":meta})), None), "{meta}");
        }
        // Given twice, the last `_meta` counts, whole.
        let (params, declared) = params_and_declared(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"_meta":{{"{version}":"2026-07-28"}},"_meta":{{"a":1}}}}}}"#
        ));
        assert_eq!((params, declared), (Some(json!({"_meta":{"a":1}})), None));
        // Params that are not an object are kept as they are.
        for params in [json!([1, "a", {"_meta":{}}]), json!(true), json!(-1), json!(1.5), json!("s")] {
            let body = json!({"jsonrpc":"2.0","id":1,"method":"ping","params":params}).to_string();
            assert_eq!(params_and_declared(&body), (Some(params.clone()), None), "{params}");
        }
    }
}
