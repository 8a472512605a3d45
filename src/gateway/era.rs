//! The two eras of MCP the gateway serves through one endpoint. A client of 2025-11-25 and
//! before opens a session with `initialize`; a client of 2026-07-28 is stateless: every request
//! declares its protocol version and capabilities in `_meta`, and mirrors its method and name in
//! headers that must match the body. This module tells the eras apart, applies the 2026-07-28
//! transport rules, and stamps the results a modern client gets.

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName};
use base64::Engine;
use memchr::memmem::Finder;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::jsonrpc::{self, Message};
use super::record::Answered;
use super::refusal::{PROTOCOL_HEADER, Refusal};
use crate::catalog::definition::is_header_name;

/// The stateless revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// The revision the gateway speaks to a legacy upstream on behalf of a modern client.
pub const BRIDGED_VERSION: &str = "2025-11-25";

pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// How long a `server/discover` answer may be reused, by the client and by the gateway.
pub const DISCOVER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The long-lived request that replaced the GET stream.
pub const LISTEN: &str = "subscriptions/listen";
/// The first notification of a subscription's stream.
pub const ACKNOWLEDGED: &str = "notifications/subscriptions/acknowledged";
/// Names the subscription each message of its stream belongs to.
const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// How often a subscription's quiet stream gets a comment, so that no proxy or client closes it.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

pub const METHOD_HEADER: &str = "Mcp-Method";
pub const NAME_HEADER: &str = "Mcp-Name";
/// The same three headers, as a request's headers are looked up by (built once, not per request).
const PROTOCOL_KEY: HeaderName = HeaderName::from_static("mcp-protocol-version");
const METHOD_KEY: HeaderName = HeaderName::from_static("mcp-method");
const NAME_KEY: HeaderName = HeaderName::from_static("mcp-name");

pub const INVALID_PARAMS: i64 = -32602;
pub const HEADER_MISMATCH: i64 = -32020;
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// The methods a 2026-07-28 client may send through the gateway.
const MODERN_METHODS: [&str; 10] = [
    "server/discover",
    "subscriptions/listen",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    "prompts/get",
    "completion/complete",
];

/// Results that carry caching hints (`CacheableResult`).
const CACHEABLE: [&str; 6] = [
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// What a 2026-07-28 request declares about its client.
#[derive(Debug, Clone, PartialEq)]
pub struct Modern {
    /// Always `MODERN_VERSION`: no other is served per request.
    pub version: &'static str,
    /// The client's capabilities (`{}` when none are declared).
    pub capabilities: Value,
    pub client_info: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Era {
    /// `initialize` and session-bound messages (2025-11-25 and before).
    Legacy,
    Modern(Modern),
}

impl Era {
    pub fn modern(&self) -> Option<&Modern> {
        match self {
            Era::Modern(modern) => Some(modern),
            Era::Legacy => None,
        }
    }
}

/// Every version the gateway serves: 2026-07-28 per request, the others through `initialize`.
pub fn supported_versions() -> Vec<&'static str> {
    std::iter::once(MODERN_VERSION).chain(jsonrpc::PROTOCOL_VERSIONS).collect()
}

/// The era of a client message, checked against the request's headers under the 2026-07-28
/// rules when it declares that revision (its `_meta` names a protocol version, or it is
/// `server/discover`, which only that revision has). Only such a request is refused.
pub fn of(message: &Message, headers: &HeaderMap) -> Result<Era, Refusal> {
    // 2026-07-28 defines no client notifications over HTTP, and no client responses at all.
    let Message::Request { method, params, declared, .. } = message else { return Ok(Era::Legacy) };
    let (method, params, declared) = (method.as_str(), params.as_ref(), declared.as_deref());
    let asked = declared.and_then(|d| d.version.as_ref());
    if asked.is_none() && method != "server/discover" {
        return Ok(Era::Legacy);
    }
    // (A `_meta` that is an object had what it declares taken out, and may be gone.)
    if params.and_then(|p| p.get("_meta")).is_some_and(|m| !(m.is_object() || m.is_null())) {
        return Err(invalid_params("params._meta must be an object"));
    }
    let header = |key: &HeaderName, name: &str| {
        headers.get(key).map(|v| v.to_str().map_err(|_| invalid_header(name))).transpose()
    };
    let version = match (asked, header(&PROTOCOL_KEY, PROTOCOL_HEADER)?) {
        (Some(Value::String(asked)), Some(header)) if asked == header => asked.as_str(),
        (Some(Value::String(asked)), Some(header)) => {
            return Err(mismatch(format!(
                "MCP-Protocol-Version header value '{header}' does not match body value '{asked}'"
            )));
        }
        (Some(Value::String(_)), None) => return Err(missing(PROTOCOL_HEADER)),
        (Some(_), _) => return Err(invalid_params(&format!("_meta[\"{META_VERSION}\"] must be a string"))),
        // `server/discover` without a version in its `_meta`: the header says which.
        (None, header) => header.unwrap_or(MODERN_VERSION),
    };
    if version != MODERN_VERSION {
        return Err(unsupported(version));
    }
    match header(&METHOD_KEY, METHOD_HEADER)? {
        Some(header) if header == method => {}
        Some(header) => {
            return Err(mismatch(format!(
                "Mcp-Method header value '{header}' does not match body value '{method}'"
            )));
        }
        None => return Err(missing(METHOD_HEADER)),
    }
    if let Some(field) = named_by(method) {
        let Some(body) = params.and_then(|p| p.get(field)).and_then(Value::as_str) else {
            return Err(invalid_params(&format!("params.{field} must be a string")));
        };
        let header = header(&NAME_KEY, NAME_HEADER)?.ok_or_else(|| missing(NAME_HEADER))?;
        let header = decoded(header).ok_or_else(|| invalid_header(NAME_HEADER))?;
        if header != body {
            return Err(mismatch(format!(
                "Mcp-Name header value '{header}' does not match body value '{body}'"
            )));
        }
    }
    if !MODERN_METHODS.contains(&method) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            jsonrpc::METHOD_NOT_FOUND,
            format!("Method not found: {method} is not served under {MODERN_VERSION}"),
        ));
    }
    if method == LISTEN && !params.and_then(|p| p.get("notifications")).is_some_and(Value::is_object) {
        return Err(invalid_params("subscriptions/listen needs a notifications filter (an object)"));
    }
    let capabilities = match declared.and_then(|d| d.capabilities.as_ref()) {
        None | Some(Value::Null) => json!({}),
        Some(capabilities @ Value::Object(_)) => capabilities.clone(),
        Some(_) => return Err(invalid_params(&format!("_meta[\"{META_CAPABILITIES}\"] must be an object"))),
    };
    let client_info = declared.and_then(|d| d.client_info.as_ref()).filter(|v| v.is_object()).cloned();
    Ok(Era::Modern(Modern { version: MODERN_VERSION, capabilities, client_info }))
}

/// The headers a 2026-07-28 request mirrors its body in: `Mcp-Method`, and `Mcp-Name` where the
/// method has one (in the Base64 sentinel form when it is not plain visible ASCII).
pub fn mirrored_headers(message: &Message) -> Vec<(&'static str, String)> {
    let Message::Request { method, params, .. } = message else { return Vec::new() };
    let mut headers = vec![(METHOD_HEADER, method.clone())];
    let name = named_by(method).and_then(|field| params.as_ref()?.get(field)?.as_str());
    if let Some(name) = name {
        headers.push((NAME_HEADER, encoded(name)));
    }
    headers
}

/// The `Mcp-Param-*` headers a 2026-07-28 client sent, for an upstream of that revision (one of
/// 2025-11-25 only has no use for them).
pub fn client_param_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("mcp-param-"))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect()
}

/// A value as a 2026-07-28 request's header carries it: as it is when it is plain visible
/// ASCII, otherwise in the Base64 sentinel form `=?base64?...?=`.
pub fn encoded(value: &str) -> String {
    let visible = value.bytes().all(|b| (0x21..=0x7e).contains(&b) || b == b' ');
    let padded = value.starts_with(' ') || value.ends_with(' ');
    let sentinel = value.starts_with("=?base64?") && value.ends_with("?=");
    if !value.is_empty() && visible && !padded && !sentinel {
        value.to_owned()
    } else {
        format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(value))
    }
}

/// The `Mcp-Param-*` headers of a `tools/call` with `arguments`, for the parameters the tool's
/// `inputSchema` marks with `x-mcp-header` (reached through `properties` only; a parameter
/// without a value, or of a type other than string, integer or boolean, has none).
pub fn param_headers(input_schema: &Value, arguments: &Value) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    marked_in(input_schema, Some(arguments), &mut headers);
    headers
}

fn marked_in(schema: &Value, value: Option<&Value>, headers: &mut Vec<(String, String)>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return };
    for (name, property) in properties {
        let value = value.and_then(|v| v.get(name));
        let header = property.get("x-mcp-header").and_then(Value::as_str).filter(|h| is_header_name(h));
        let text = match value {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Bool(flag)) => Some(flag.to_string()),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        };
        if let (Some(header), Some(text)) = (header, text) {
            headers.push((format!("Mcp-Param-{header}"), encoded(&text)));
        }
        marked_in(property, value, headers);
    }
}

/// The message with the `_meta` a 2026-07-28 upstream needs, for a client that declared its
/// capabilities and identity at `initialize` instead.
pub fn with_modern_meta(body: &[u8], capabilities: &Value, client_info: &Value) -> Option<Vec<u8>> {
    let mut message: Value = serde_json::from_slice(body).ok()?;
    let params = message.as_object_mut()?.entry("params").or_insert_with(|| json!({}));
    let meta = params.as_object_mut()?.entry("_meta").or_insert_with(|| json!({}));
    let meta = meta.as_object_mut()?;
    meta.insert(META_VERSION.to_owned(), json!(MODERN_VERSION));
    meta.insert(META_CAPABILITIES.to_owned(), capabilities.clone());
    meta.insert(META_CLIENT_INFO.to_owned(), client_info.clone());
    serde_json::to_vec(&message).ok()
}

/// The body field `Mcp-Name` mirrors, for the methods that have one.
fn named_by(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// A header value as sent, or decoded from the Base64 sentinel form `=?base64?...?=`.
fn decoded(value: &str) -> Option<std::borrow::Cow<'_, str>> {
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
            String::from_utf8(bytes).ok().map(std::borrow::Cow::Owned)
        }
        None => Some(std::borrow::Cow::Borrowed(value)),
    }
}

fn invalid_params(message: &str) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, INVALID_PARAMS, format!("Invalid params: {message}"))
}

fn mismatch(message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, HEADER_MISMATCH, format!("Header mismatch: {message}"))
}

fn missing(header: &str) -> Refusal {
    mismatch(format!("the {header} header is required under {MODERN_VERSION}"))
}

fn invalid_header(header: &str) -> Refusal {
    mismatch(format!("the {header} header is malformed"))
}

fn unsupported(requested: &str) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, UNSUPPORTED_VERSION, "Unsupported protocol version")
        .with_data(json!({ "supported": supported_versions(), "requested": requested }))
}

/// A request's params as a legacy upstream gets them in the gateway's session: without the
/// `_meta` keys only 2026-07-28 defines (`jsonrpc::parse` took them out), and with the
/// gateway's `token` for the progress token the client chose (the clients that share the
/// session choose theirs alike). Written from the client's params, not copied.
pub struct ForLegacyUpstream<'a> {
    pub params: &'a Value,
    pub token: &'a Value,
}

impl Serialize for ForLegacyUpstream<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(params) = self.params.as_object() else { return self.params.serialize(serializer) };
        let mut relayed = serializer.serialize_map(None)?;
        for (key, value) in params {
            match value.as_object().filter(|_| key == "_meta") {
                Some(meta) if meta.is_empty() => {}
                Some(meta) => relayed.serialize_entry(key, &KeptMeta { meta, token: self.token })?,
                None => relayed.serialize_entry(key, value)?,
            }
        }
        relayed.end()
    }
}

/// What a legacy upstream gets of a request's `_meta`.
struct KeptMeta<'a> {
    meta: &'a Map<String, Value>,
    token: &'a Value,
}

impl Serialize for KeptMeta<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let token = |(key, value)| (key, if key == "progressToken" { self.token } else { value });
        serializer.collect_map(self.meta.iter().map(token))
    }
}

/// The progress token a request's `_meta` carries.
pub fn progress_token(message: &Message) -> Option<&Value> {
    let Message::Request { params: Some(params), .. } = message else { return None };
    // (`get` rather than `pointer`, which copies each step of its path: this runs per call.)
    params.get("_meta")?.get("progressToken")
}

/// A subscription's notification as a 2025-11-25 client gets it on its GET stream: without the
/// subscription it came on.
pub fn without_subscription_id(mut message: Value) -> Value {
    if let Some(params) = message.get_mut("params").and_then(Value::as_object_mut)
        && let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut)
    {
        meta.remove(META_SUBSCRIPTION_ID);
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
    message
}

/// A message of a subscription's stream, with the subscription it belongs to (the id of the
/// `subscriptions/listen` that opened it).
pub fn with_subscription_id(mut message: Value, id: &Value) -> Value {
    let target = if message.get("result").is_some() { "result" } else { "params" };
    if let Some(object) = message.as_object_mut() {
        let field = object.entry(target).or_insert_with(|| json!({}));
        if let Some(field) = field.as_object_mut() {
            let meta = field.entry("_meta").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert(META_SUBSCRIPTION_ID.to_owned(), id.clone());
            }
        }
    }
    message
}

/// Whether a subscription with the (acknowledged) `filter` gets the notification: of a list it
/// listens to, or an update of a resource it names (or of a part of one).
pub fn is_subscribed(filter: &Value, notification: &Value) -> bool {
    let listens = |field: &str| filter.get(field) == Some(&Value::Bool(true));
    match notification.get("method").and_then(Value::as_str) {
        Some("notifications/tools/list_changed") => listens("toolsListChanged"),
        Some("notifications/prompts/list_changed") => listens("promptsListChanged"),
        Some("notifications/resources/list_changed") => listens("resourcesListChanged"),
        Some("notifications/resources/updated") => {
            let Some(uri) = notification.pointer("/params/uri").and_then(Value::as_str) else { return false };
            let named = filter.get("resourceSubscriptions").and_then(Value::as_array);
            named.into_iter().flatten().filter_map(Value::as_str).any(|named| {
                uri == named || uri.strip_prefix(named).is_some_and(|rest| rest.starts_with(['/', '#', '?']))
            })
        }
        _ => false,
    }
}

/// A result as a modern client gets it: with `resultType`, and the caching hints the result
/// of a list or a read must carry. What the gateway relays for a caller is theirs alone, so it
/// is `private`; an upstream's own freshness hint is kept.
pub fn stamp(message: &mut Value, method: &str) {
    let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else { return };
    result.entry("resultType").or_insert_with(|| json!("complete"));
    if CACHEABLE.contains(&method) && result.get("resultType").and_then(Value::as_str) == Some("complete") {
        result.entry("ttlMs").or_insert_with(|| json!(0));
        result.insert("cacheScope".to_owned(), json!("private"));
    }
}

/// A legacy upstream's answer (JSON text) to the request the gateway sent under `sent_id`, as
/// the modern client that sent it under `id` gets it, written around the upstream's text rather
/// than parsed and written again: a result is stamped as `stamp` does for a method that carries
/// no caching hints; with how it ended, for the record. `None` when the text is not such an
/// answer, or its result is stamped already.
pub fn answer_as_modern(text: &str, sent_id: &Value, id: &Value) -> Option<(String, Answered)> {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        id: &'a RawValue,
        #[serde(borrow)]
        result: Option<&'a RawValue>,
        #[serde(borrow)]
        error: Option<&'a RawValue>,
        method: Option<serde::de::IgnoredAny>,
    }
    let answer: Answer = serde_json::from_str(text).ok()?;
    // The gateway's ids are plain strings, compared as written; any other id is read.
    let written = answer.id.get();
    let plain = sent_id
        .as_str()
        .is_some_and(|sent| written.strip_prefix('"').and_then(|w| w.strip_suffix('"')) == Some(sent));
    let same = plain || serde_json::from_str::<Value>(written).is_ok_and(|written| written == *sent_id);
    if !same || answer.method.is_some() {
        return None;
    }
    // (Put together piece by piece, as text that is not checked to be UTF-8 again as a whole:
    // this runs on every bridged call.)
    let mut modern = String::with_capacity(text.len() + 48);
    modern.push_str(r#"{"jsonrpc":"2.0","id":"#);
    modern.push_str(&serde_json::to_string(id).ok()?);
    match (answer.result, answer.error) {
        (Some(result), None) => {
            let members = result.get().trim_start().strip_prefix('{')?;
            if RESULT_TYPE_KEY.find(members.as_bytes()).is_some() {
                return None;
            }
            modern.push_str(r#","result":{"resultType":"complete""#);
            if !members.trim_start().starts_with('}') {
                modern.push(',');
            }
            modern.push_str(members);
        }
        (None, Some(error)) => {
            modern.push_str(r#","error":"#);
            modern.push_str(error.get());
        }
        _ => return None,
    }
    modern.push('}');
    let error = answer.error.and_then(|error| serde_json::from_str::<Value>(error.get()).ok());
    Some((modern, Answered::of(error.as_ref(), answer.result)))
}

/// The `requestState` of the gateway's own question for a missing token.
const ASKED_FOR_TOKEN: &str = "mcp-platform:token";
static RESULT_TYPE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"resultType\""));

/// Whether the client declared that it can send its user to a URL (URL-mode elicitation).
pub fn opens_urls(era: &Era) -> bool {
    era.modern().is_some_and(|m| m.capabilities.pointer("/elicitation/url").is_some_and(Value::is_object))
}

/// The answer that asks the user to set their token at `url` (an `InputRequiredResult` with a
/// URL-mode elicitation); the client retries the request once they have.
pub fn asking_for_token(id: &Value, url: &str, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": {
        "resultType": "input_required",
        "inputRequests": { "token": { "method": "elicitation/create",
            "params": { "mode": "url", "url": url, "message": message } } },
        "requestState": ASKED_FOR_TOKEN,
    } })
}

/// Takes the answer to the gateway's own question out of a retry that carries it (the service
/// did not ask), from the message and from its body; the body without it, and `None` for every
/// other message. (The body is what an upstream of 2026-07-28 gets, with the `_meta` the message
/// no longer has; the message is what a legacy upstream's request is written from.)
pub fn take_answers_for_gateway(message: &mut Message, body: &[u8]) -> Option<Vec<u8>> {
    let Message::Request { params: Some(Value::Object(params)), .. } = message else { return None };
    if params.get("requestState").and_then(Value::as_str) != Some(ASKED_FOR_TOKEN) {
        return None;
    }
    let mut whole: Value = serde_json::from_slice(body).ok()?;
    for params in [Some(params), whole.get_mut("params").and_then(Value::as_object_mut)].into_iter().flatten()
    {
        params.remove("requestState");
        params.remove("inputResponses");
    }
    serde_json::to_vec(&whole).ok()
}

/// Whether the method's result carries caching hints.
pub fn is_cacheable(method: &str) -> bool {
    CACHEABLE.contains(&method)
}

/// The `server/discover` result for an upstream that answered `initialize` with `initialized`.
pub fn discover_result(initialized: &Map<String, Value>, ttl_ms: u64) -> Value {
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": supported_versions(),
        "capabilities": initialized.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        "ttlMs": ttl_ms,
        "cacheScope": "private",
    });
    if let Some(info) = initialized.get("serverInfo") {
        result["_meta"] = json!({ META_SERVER_INFO: info });
    }
    if let Some(instructions) = initialized.get("instructions") {
        result["instructions"] = instructions.clone();
    }
    result
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(HeaderName::try_from(*name).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn call(name: &str) -> Message {
        let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,
            "_meta":{META_VERSION: MODERN_VERSION, META_CAPABILITIES: {"elicitation":{}}}}});
        jsonrpc::parse(body.to_string().as_bytes()).unwrap()
    }

    const GOOD: [(&str, &str); 3] =
        [("mcp-protocol-version", MODERN_VERSION), ("mcp-method", "tools/call"), ("mcp-name", "echo")];

    #[test]
    fn a_request_declaring_the_modern_revision_is_modern_and_others_are_legacy() {
        let era = of(&call("echo"), &headers(&GOOD)).unwrap();
        assert_eq!(era.modern().unwrap().capabilities, json!({"elicitation":{}}));
        let legacy = jsonrpc::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"progressToken":1}}}"#,
        );
        assert_eq!(of(&legacy.unwrap(), &HeaderMap::new()).unwrap(), Era::Legacy);
        let discover = jsonrpc::parse(br#"{"jsonrpc":"2.0","id":1,"method":"server/discover"}"#).unwrap();
        let era = of(&discover, &headers(&[("mcp-method", "server/discover")])).unwrap();
        assert_eq!(era.modern().unwrap().version, MODERN_VERSION);
    }

    #[test]
    fn headers_must_mirror_the_body() {
        let code = |pairs: &[(&str, &str)]| of(&call("echo"), &headers(pairs)).unwrap_err().error.code;
        assert_eq!(code(&GOOD[1..]), HEADER_MISMATCH, "no version header");
        assert_eq!(code(&[GOOD[0], GOOD[2]]), HEADER_MISMATCH, "no method header");
        assert_eq!(code(&GOOD[..2]), HEADER_MISMATCH, "no name header");
        assert_eq!(code(&[GOOD[0], ("mcp-method", "tools/list"), GOOD[2]]), HEADER_MISMATCH);
        assert_eq!(code(&[GOOD[0], GOOD[1], ("mcp-name", "add")]), HEADER_MISMATCH);
        assert_eq!(code(&[("mcp-protocol-version", "2025-11-25"), GOOD[1], GOOD[2]]), HEADER_MISMATCH);
        // The Base64 sentinel form is decoded before it is compared.
        let name = "héllo wörld";
        let encoded = format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(name));
        assert!(of(&call(name), &headers(&[GOOD[0], GOOD[1], ("mcp-name", &encoded)])).is_ok());
        assert_eq!(
            of(&call(name), &headers(&[GOOD[0], GOOD[1], ("mcp-name", "=?base64?%%?=")]))
                .unwrap_err()
                .error
                .code,
            HEADER_MISMATCH
        );
    }

    #[test]
    fn an_unknown_version_lists_the_supported_ones_and_unknown_methods_are_404() {
        let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{META_VERSION:"1900-01-01"}}});
        let message = jsonrpc::parse(body.to_string().as_bytes()).unwrap();
        let refusal =
            of(&message, &headers(&[("mcp-protocol-version", "1900-01-01"), ("mcp-method", "tools/list")]))
                .unwrap_err();
        assert_eq!((refusal.status, refusal.error.code), (StatusCode::BAD_REQUEST, UNSUPPORTED_VERSION));
        let data = refusal.error.body()["error"]["data"].clone();
        assert_eq!(data["requested"], "1900-01-01");
        assert_eq!(data["supported"][0], MODERN_VERSION);
        let ping =
            json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{META_VERSION:MODERN_VERSION}}});
        let message = jsonrpc::parse(ping.to_string().as_bytes()).unwrap();
        let refusal =
            of(&message, &headers(&[("mcp-protocol-version", MODERN_VERSION), ("mcp-method", "ping")]))
                .unwrap_err();
        assert_eq!((refusal.status, refusal.error.code), (StatusCode::NOT_FOUND, jsonrpc::METHOD_NOT_FOUND));
        let odd = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{META_VERSION: 7}}});
        let message = jsonrpc::parse(odd.to_string().as_bytes()).unwrap();
        assert_eq!(of(&message, &headers(&GOOD)).unwrap_err().error.code, INVALID_PARAMS);
        let listen = json!({"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"_meta":{META_VERSION:MODERN_VERSION}}});
        let message = jsonrpc::parse(listen.to_string().as_bytes()).unwrap();
        let listen_headers =
            headers(&[("mcp-protocol-version", MODERN_VERSION), ("mcp-method", "subscriptions/listen")]);
        assert_eq!(
            of(&message, &listen_headers).unwrap_err().error.code,
            INVALID_PARAMS,
            "a listen without a filter"
        );
        let odd = json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":"x"}});
        let message = jsonrpc::parse(odd.to_string().as_bytes()).unwrap();
        assert_eq!(of(&message, &headers(&GOOD)).unwrap_err().error.code, INVALID_PARAMS);
    }

    #[test]
    fn a_request_sent_to_a_modern_upstream_mirrors_its_body_and_carries_what_the_client_declared() {
        let plain =
            jsonrpc::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#);
        assert_eq!(
            mirrored_headers(&plain.unwrap()),
            [(METHOD_HEADER, "tools/call".into()), (NAME_HEADER, "echo".into())]
        );
        let uri = json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///héllo"}});
        let headers = mirrored_headers(&jsonrpc::parse(uri.to_string().as_bytes()).unwrap());
        assert_eq!(
            headers[1].1,
            format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode("file:///héllo"))
        );
        let list = jsonrpc::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(mirrored_headers(&list).len(), 1);

        let body =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"progressToken":2}}}"#;
        let sent: Value = serde_json::from_slice(
            &with_modern_meta(body, &json!({"roots":{}}), &json!({"name":"c"})).unwrap(),
        )
        .unwrap();
        assert_eq!(sent["params"]["_meta"][META_VERSION], MODERN_VERSION);
        assert_eq!(sent["params"]["_meta"][META_CAPABILITIES], json!({"roots":{}}));
        assert_eq!(sent["params"]["_meta"]["progressToken"], 2);
        let bare: Value = serde_json::from_slice(
            &with_modern_meta(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, &json!({}), &json!({}))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(bare["params"]["_meta"][META_VERSION], MODERN_VERSION);
        assert!(
            with_modern_meta(
                br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#,
                &json!({}),
                &json!({})
            )
            .is_none()
        );
    }

    #[test]
    fn results_are_stamped_and_legacy_upstreams_get_no_modern_meta() {
        let mut list = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}});
        stamp(&mut list, "tools/list");
        assert_eq!(list["result"]["resultType"], "complete");
        assert_eq!(
            (list["result"]["ttlMs"].clone(), list["result"]["cacheScope"].clone()),
            (json!(0), json!("private"))
        );
        let mut error = json!({"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}});
        stamp(&mut error, "tools/list");
        assert!(error["error"].get("resultType").is_none());
        let mut call = json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}});
        stamp(&mut call, "tools/call");
        assert_eq!(call["result"], json!({"content":[],"resultType":"complete"}));

        // The params of a request as the client sent it, as a legacy upstream gets them.
        let for_legacy = |params: Value| {
            let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":params});
            let Message::Request { params: Some(params), .. } =
                jsonrpc::parse(body.to_string().as_bytes()).unwrap()
            else {
                panic!("a request with params")
            };
            json!(ForLegacyUpstream { params: &params, token: &json!("g-1") })
        };
        let params = json!({"name":"echo", "_meta":{META_VERSION: MODERN_VERSION, "progressToken": 3,
            META_CAPABILITIES: {}, META_CLIENT_INFO: {"name":"c"}, META_LOG_LEVEL: "info"}});
        assert_eq!(for_legacy(params), json!({"name":"echo", "_meta":{"progressToken":"g-1"}}));
        assert_eq!(for_legacy(json!({"_meta":{META_VERSION: MODERN_VERSION}})), json!({}));
        assert_eq!(for_legacy(json!({"_meta":{}})), json!({}));
        assert_eq!(for_legacy(json!({"_meta":{"x":1}, "a":[1]})), json!({"_meta":{"x":1}, "a":[1]}));
        assert_eq!(for_legacy(json!([1, 2])), json!([1, 2]));
    }

    #[test]
    fn an_answer_written_around_the_upstreams_text_is_the_stamped_answer() {
        let sent = json!("mcp-platform-7");
        let modern = |text: &str| answer_as_modern(text, &sent, &json!(42)).map(|(text, _)| text);
        for text in [
            r#"{"jsonrpc":"2.0","id":"mcp-platform-7","result":{"content":[{"type":"text","text":"a \"method\""}]}}"#,
            r#"{"result": {} ,"id":"mcp-platform-7","jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":"mcp-platform-7","error":{"code":-32602,"message":"bad"}}"#,
            // The same id written with an escape.
            r#"{"jsonrpc":"2.0","id":"\u006dcp-platform-7","result":{"a":1}}"#,
        ] {
            let mut expected: Value = serde_json::from_str(text).unwrap();
            expected["id"] = json!(42);
            stamp(&mut expected, "tools/call");
            let written = modern(text).unwrap_or_else(|| panic!("not written: {text}"));
            assert_eq!(serde_json::from_str::<Value>(&written).unwrap(), expected, "{text}");
        }
        // How each ended goes to the record as reading the written answer would find it.
        for text in [
            r#"{"jsonrpc":"2.0","id":"mcp-platform-7","error":{"code":-32602,"message":"bad"}}"#,
            r#"{"jsonrpc":"2.0","id":"mcp-platform-7","result":{"content":[],"isError":true}}"#,
            r#"{"jsonrpc":"2.0","id":"mcp-platform-7","result":{"content":[],"isError":false}}"#,
        ] {
            let (written, answered) = answer_as_modern(text, &sent, &json!(42)).unwrap();
            let read = crate::gateway::record::ending_of(&written, &json!(42), 200);
            assert_eq!(answered.ending(200), read, "{text}");
            assert!(read.error_code.is_some() || read.tool_error == text.contains("true"), "{text}");
        }
        // What it cannot write as it is: another request's answer, a request, a stamped result.
        for text in [
            r#"{"jsonrpc":"2.0","id":"mcp-platform-8","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":"mcp-platform-77","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":7,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":"mcp-platform-7","method":"roots/list"}"#,
            r#"{"jsonrpc":"2.0","id":"mcp-platform-7","result":{"resultType":"input_required"}}"#,
            r#"{"jsonrpc":"2.0","id":"mcp-platform-7","result":[]}"#,
            r#"{"jsonrpc":"2.0","id":"mcp-platform-7"}"#,
            "not json",
        ] {
            assert_eq!(modern(text), None, "{text}");
        }
    }

    #[test]
    fn parameters_marked_for_headers_are_mirrored_encoded() {
        let schema = json!({ "type": "object", "properties": {
            "region": { "type": "string", "x-mcp-header": "Region" },
            "greeting": { "type": "string", "x-mcp-header": "Greeting" },
            "count": { "type": "integer", "x-mcp-header": "Count" },
            "dry": { "type": "boolean", "x-mcp-header": "Dry-Run" },
            "ratio": { "type": "number", "x-mcp-header": "Ratio" },
            "absent": { "type": "string", "x-mcp-header": "Absent" },
            "bad": { "type": "string", "x-mcp-header": "Not A Token" },
            "query": { "type": "string" },
            "nested": { "type": "object", "properties": { "zone": { "type": "string", "x-mcp-header": "Zone" } } },
            "list": { "type": "array", "items": { "type": "string", "x-mcp-header": "Item" } },
        } });
        let arguments = json!({ "region": "us-west1", "greeting": "Hello, 世界", "count": -7, "dry": true,
            "ratio": 0.5, "bad": "x", "query": "SELECT 1", "nested": { "zone": "=?base64?literal?=" },
            "list": ["a"] });
        let mut headers = param_headers(&schema, &arguments);
        headers.sort();
        let expected = [
            ("Mcp-Param-Count", "-7"),
            ("Mcp-Param-Dry-Run", "true"),
            ("Mcp-Param-Greeting", "=?base64?SGVsbG8sIOS4lueVjA==?="),
            ("Mcp-Param-Region", "us-west1"),
            ("Mcp-Param-Zone", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
        ];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        assert_eq!(headers, expected);
        assert!(param_headers(&json!({}), &arguments).is_empty());
    }

    #[test]
    fn a_subscription_gets_what_it_listens_to_with_its_id() {
        let filter = json!({ "toolsListChanged": true, "resourceSubscriptions": ["file:///project"] });
        let note = |method: &str, uri: Option<&str>| match uri {
            Some(uri) => json!({ "jsonrpc": "2.0", "method": method, "params": { "uri": uri } }),
            None => json!({ "jsonrpc": "2.0", "method": method }),
        };
        assert!(is_subscribed(&filter, &note("notifications/tools/list_changed", None)));
        assert!(!is_subscribed(&filter, &note("notifications/prompts/list_changed", None)));
        assert!(!is_subscribed(&filter, &note("notifications/message", None)));
        for (uri, expected) in [
            ("file:///project", true),
            ("file:///project/config.json", true),
            ("file:///projects", false),
            ("file:///other", false),
        ] {
            assert_eq!(
                is_subscribed(&filter, &note("notifications/resources/updated", Some(uri))),
                expected,
                "{uri}"
            );
        }
        let stamped = with_subscription_id(note("notifications/tools/list_changed", None), &json!(7));
        assert_eq!(stamped["params"]["_meta"][META_SUBSCRIPTION_ID], 7);
        let ended = with_subscription_id(json!({ "jsonrpc": "2.0", "id": 7, "result": {} }), &json!(7));
        assert_eq!(ended["result"]["_meta"][META_SUBSCRIPTION_ID], 7);
        let updated = note("notifications/resources/updated", Some("file:///project"));
        let stamped = with_subscription_id(updated.clone(), &json!("s-1"));
        assert_eq!(without_subscription_id(stamped), updated);
    }
}
