//! Redaction (DESIGN.md section 7): values under sensitive key names, well-known credential
//! formats, and the credentials the platform itself injected are replaced before a body, an
//! error message, a header or a line of upstream output is stored or logged.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

pub const REDACTED: &str = "[REDACTED]";

/// Words that make a key name sensitive wherever they appear in it (`githubToken`, `api_key`).
const SENSITIVE_WORDS: [&str; 14] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "cookie",
    "session",
    "csrf",
    "bearer",
    "apikey",
];

/// Joined names that are sensitive though their words alone are not (`private_key`).
const SENSITIVE_PAIRS: [&str; 4] = ["apikey", "privatekey", "accesskey", "clientsecret"];

/// Credential formats found inside any text (DESIGN.md section 7): what each is, and its
/// pattern. Each has a positive and a negative sample in the tests.
const FORMATS: [(&str, &str); 14] = [
    ("PEM private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    ("GitHub token", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"),
    ("GitHub fine-grained token", r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    ("GitLab token", r"\bgl(?:pat|dt|rt|ptt|ft|soat|oas|cbt|imt)-[A-Za-z0-9_\-]{20,}"),
    ("Stripe secret or restricted key", r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"),
    ("AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("Slack token", r"\bxox[abposre]-[A-Za-z0-9\-]{10,}|\bxapp-\d-[A-Za-z0-9\-]{10,}"),
    ("Anthropic key", r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
    ("OpenAI key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    ("npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("Google API key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("JWT", r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}"),
    ("MCP Platform API key", r"\bmcp_sk_[A-Za-z0-9]{20,}"),
    ("Bearer credential", r"(?i:\bbearer\s+)[A-Za-z0-9._~+/\-]{8,}=*"),
];

static PATTERNS: LazyLock<Regex> = LazyLock::new(|| {
    let alternatives: Vec<&str> = FORMATS.iter().map(|(_, pattern)| *pattern).collect();
    Regex::new(&alternatives.join("|")).expect("redaction patterns compile")
});

/// `user:password@` in URLs.
const URL_CREDENTIAL: &str = r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@:]+:[^\s/@]+@";

static URL_CREDENTIALS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(URL_CREDENTIAL).expect("URL pattern compiles"));

/// Whether a key name names a secret: one of its words is a sensitive word, or its words
/// joined hold a sensitive pair. Every key of every recorded body is asked, so a short ASCII
/// key (nearly all) is looked at without allocating.
pub fn is_sensitive_key(key: &str) -> bool {
    const SHORT: usize = 64;
    if !key.is_ascii() || key.len() > SHORT {
        return has_sensitive_words(&split_words(key));
    }
    // The key's letters and digits in lower case; each word a range of them.
    let mut joined = [0u8; SHORT];
    let (mut len, mut start, mut previous_lower, mut sensitive) = (0, 0, false, false);
    let is_word = |word: &[u8]| SENSITIVE_WORDS.iter().any(|w| w.as_bytes() == word);
    for &b in key.as_bytes() {
        if !b.is_ascii_alphanumeric() {
            sensitive |= is_word(&joined[start..len]);
            start = len;
            previous_lower = false;
            continue;
        }
        if b.is_ascii_uppercase() && previous_lower && len > start {
            sensitive |= is_word(&joined[start..len]);
            start = len;
        }
        previous_lower = b.is_ascii_lowercase() || b.is_ascii_digit();
        joined[len] = b.to_ascii_lowercase();
        len += 1;
    }
    sensitive |= is_word(&joined[start..len]);
    let joined = &joined[..len];
    sensitive || SENSITIVE_PAIRS.iter().any(|pair| joined.windows(pair.len()).any(|w| w == pair.as_bytes()))
}

fn has_sensitive_words(words: &[String]) -> bool {
    if words.iter().any(|w| SENSITIVE_WORDS.contains(&w.as_str())) {
        return true;
    }
    let joined: String = words.concat();
    SENSITIVE_PAIRS.iter().any(|pair| joined.contains(pair))
}

/// `githubToken`, `GITHUB_TOKEN`, `x-api-key` -> lower-case words.
fn split_words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Redacts credential formats, URL credentials and the `known` secrets (e.g. the token the
/// platform injected) in a piece of text.
pub fn redact_text<'a>(text: &'a str, known: &[&str]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for secret in known.iter().filter(|s| s.len() >= 4) {
        if holds(&out, secret) {
            out = Cow::Owned(out.replace(secret, REDACTED));
        }
    }
    if PATTERNS.is_match(&out) {
        out = Cow::Owned(PATTERNS.replace_all(&out, REDACTED).into_owned());
    }
    if URL_CREDENTIALS.is_match(&out) {
        out = Cow::Owned(URL_CREDENTIALS.replace_all(&out, format!("${{1}}{REDACTED}@")).into_owned());
    }
    out
}

/// Redacts a JSON value in place: values under sensitive keys, then every string.
pub fn redact_json(value: &mut Value, known: &[&str]) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if is_sensitive_key(key) && !item.is_null() {
                    *item = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(item, known);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redact_json(item, known)),
        Value::String(s) => {
            if let Cow::Owned(redacted) = redact_text(s, known) {
                *s = redacted;
            }
        }
        _ => {}
    }
}

/// Redacts a body: as JSON when it parses, each message of an event stream as JSON, and as
/// text otherwise. A body that holds nothing to redact is kept as it is, without being parsed.
pub fn redact_body(body: &str, known: &[&str]) -> String {
    if holds_nothing_to_redact(body, known) {
        return body.to_owned();
    }
    if let Ok(mut value) = serde_json::from_str::<Value>(body) {
        redact_json(&mut value, known);
        return serde_json::to_string(&value).expect("a JSON value serializes");
    }
    if !is_event_stream(body) {
        return redact_text(body, known).into_owned();
    }
    let mut redacted = String::with_capacity(body.len());
    for line in body.split_inclusive('\n') {
        let data = line.strip_prefix("data:").map(str::trim);
        match data.and_then(|data| serde_json::from_str::<Value>(data).ok()) {
            Some(mut message) => {
                redact_json(&mut message, known);
                redacted.push_str("data: ");
                redacted.push_str(&serde_json::to_string(&message).expect("a JSON value serializes"));
                redacted.push_str(if line.ends_with('\n') { "\n" } else { "" });
            }
            None => redacted.push_str(&redact_text(line, known)),
        }
    }
    redacted
}

/// Whether a body begins as an SSE stream does.
fn is_event_stream(body: &str) -> bool {
    let first = body.trim_start().lines().next().unwrap_or_default();
    ["data:", "id:", "event:", "retry:", ":"].iter().any(|field| first.starts_with(field))
}

/// What in a body's text may make redaction change it, looked for in one pass: a sensitive
/// word in any case (each sensitive key holds one, and each sensitive pair ends in "key"), an
/// escape or a non-ASCII character (which could spell one), a credential format or a URL
/// credential (which the text's JSON strings could hold). Without any of these or a known
/// secret, there is nothing to redact. The text is read as ASCII: one with any other byte is
/// looked at in full anyway, and in ASCII text the formats' word boundaries, spaces and letters
/// of either case are what they are in Unicode.
static MAY_NEED_REDACTION: LazyLock<regex::bytes::Regex> = LazyLock::new(|| {
    let words: Vec<&str> = SENSITIVE_WORDS.iter().copied().chain(["key"]).collect();
    let formats = FORMATS.iter().map(|(_, pattern)| *pattern).chain([URL_CREDENTIAL]);
    let alternatives: Vec<String> = [format!("(?i:{})", words.join("|")), r"\\|[\x80-\xff]".to_owned()]
        .into_iter()
        .chain(formats.map(|pattern| format!("(?:{pattern})")))
        .collect();
    regex::bytes::Regex::new(&format!("(?-u){}", alternatives.join("|")))
        .expect("the redaction pre-check compiles")
});

fn holds_nothing_to_redact(body: &str, known: &[&str]) -> bool {
    !MAY_NEED_REDACTION.is_match(body.as_bytes())
        && !known.iter().any(|secret| secret.len() >= 4 && holds(body, secret))
}

/// Above this length, a text is searched for a secret with a searcher built for it.
const LONG_TEXT: usize = 4096;

/// Whether `text` holds `secret`. Each text is searched once for each secret, and most are a
/// few hundred bytes: then the places of the secret's first byte, which `memchr` finds many
/// bytes at a time, are all there is to compare, and `str::contains` would spend several times
/// the search on building its Two-Way searcher for a 40-byte token first.
fn holds(text: &str, secret: &str) -> bool {
    let (text, secret) = (text.as_bytes(), secret.as_bytes());
    if text.len() > LONG_TEXT {
        return memchr::memmem::find(text, secret).is_some();
    }
    let Some(&first) = secret.first() else { return true };
    memchr::memchr_iter(first, text).any(|at| text[at..].starts_with(secret))
}

/// A header's value as it may be recorded.
pub fn redact_header<'a>(name: &str, value: &'a str, known: &[&str]) -> Cow<'a, str> {
    if is_sensitive_key(name) || name.eq_ignore_ascii_case("proxy-authorization") {
        Cow::Borrowed(REDACTED)
    } else {
        redact_text(value, known)
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary; true when something was cut.
pub fn truncate(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sensitive_key_names_are_recognised_in_any_spelling() {
        for key in [
            "password",
            "Password",
            "db_password",
            "client_secret",
            "clientSecret",
            "token",
            "githubToken",
            "GITHUB_TOKEN",
            "access_token",
            "api_key",
            "apiKey",
            "x-api-key",
            "apikey",
            "Authorization",
            "auth",
            "credentials",
            "private_key",
            "privateKey",
            "cookie",
            "Set-Cookie",
            "session_id",
            "csrf_token",
            "bearer",
            "aws_access_key_id",
        ] {
            assert!(is_sensitive_key(key), "{key} should be sensitive");
        }
        for key in ["author", "authority_name", "max_tokens", "name", "description", "session_count_x"] {
            let expected = key.starts_with("session");
            assert_eq!(is_sensitive_key(key), expected, "{key}");
        }
    }

    #[test]
    fn short_keys_are_judged_as_long_ones_are() {
        let keys = [
            "GITHUB_TOKEN",
            "githubToken",
            "x-api-key",
            "apiKey",
            "APIKey",
            "myApiKeyId",
            "clientSecretRef",
            "PrivateKeyPem",
            "progressToken",
            "io.modelcontextprotocol/clientCapabilities",
            "resultType",
            "jsonrpc",
            "_meta",
            "authority_name",
            "max_tokens",
            "HTTPAuthHeader",
            "a1Token",
            "session2id",
            "pass_word",
            "pwd",
            "",
            "--",
            "X",
            "passwordHash",
            "accessKeyId",
            "secrets",
            "structuredContent",
        ];
        for key in keys {
            assert_eq!(is_sensitive_key(key), has_sensitive_words(&split_words(key)), "{key}");
        }
        assert!(is_sensitive_key("très_secret_token"), "a key with other letters goes the long way");
        assert!(is_sensitive_key(&format!("{}_token", "x".repeat(80))), "so does a long key");
    }

    /// For each format of `FORMATS`: a credential that must be found, and a look-alike that
    /// must not be.
    const SAMPLES: [(&str, &str, &str); 14] = [
        (
            "PEM private key",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----",
        ),
        ("GitHub token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "ghp_short"),
        (
            "GitHub fine-grained token",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "github_pat_docs",
        ),
        ("GitLab token", "glpat-xxxxxxxxxxxxxxxxxxxx", "glpat-short"),
        (
            "Stripe secret or restricted key",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "pk_live_4eC39HqLyjWDarjtT1zdp7dc",
        ),
        ("AWS access key id", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLEAND_MORE"),
        ("Slack token", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-1"),
        ("Anthropic key", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh", "sk-ant-short"),
        ("OpenAI key", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789T3BlbkFJ", "sk-learn"),
        ("npm token", "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "npm_config_cache"),
        ("Google API key", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "AIzaTooShort"),
        (
            "JWT",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "eyJhbGciOiJIUzI1NiJ9",
        ),
        ("MCP Platform API key", "mcp_sk_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ012345", "mcp_sk_"),
        ("Bearer credential", "Bearer abc.def-ghi_123==", "the bearer of this letter"),
    ];

    #[test]
    fn every_credential_format_is_found_and_its_look_alike_is_not() {
        assert_eq!(
            SAMPLES.map(|(name, _, _)| name),
            FORMATS.map(|(name, _)| name),
            "one sample pair per format"
        );
        for (name, secret, look_alike) in SAMPLES {
            // In prose, in a JSON value under an ordinary key, and in a body that is not JSON.
            let text = format!("the value is {secret} here");
            assert_eq!(redact_text(&text, &[]), format!("the value is {REDACTED} here"), "{name}");
            let body = serde_json::json!({ "note": format!("see {secret}") }).to_string();
            assert!(!redact_body(&body, &[]).contains(secret), "{name} in JSON");
            assert!(!redact_body(&format!("plain text: {secret};"), &[]).contains(secret), "{name} as text");
            let harmless = format!("the value is {look_alike} here");
            assert_eq!(redact_text(&harmless, &[]), harmless, "{name}: {look_alike} is not a secret");
        }
    }

    #[test]
    fn ids_and_hashes_are_not_secrets() {
        for text in [
            "550e8400-e29b-41d4-a716-446655440000",
            "commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "risk-assessment-for-the-quarterly-review",
            "task-0123456789abcdefghijklmnop",
        ] {
            assert!(matches!(redact_text(text, &[]), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn credentials_in_urls_are_found() {
        let url = redact_text("clone https://ada:s3cr3t@github.com/acme/repo.git", &[]);
        assert_eq!(url, format!("clone https://{REDACTED}@github.com/acme/repo.git"));
        let bearer = redact_text("Authorization: Bearer abc.def-ghi_123==", &[]);
        assert_eq!(bearer, format!("Authorization: {REDACTED}"));
        assert!(matches!(redact_text("nothing secret here", &[]), Cow::Borrowed(_)));
    }

    #[test]
    fn injected_credentials_are_removed_even_in_unknown_formats() {
        let echoed = "upstream says: your token is my-own-format-credential-42!";
        let redacted = redact_text(echoed, &["my-own-format-credential-42"]);
        assert_eq!(redacted, format!("upstream says: your token is {REDACTED}!"));
    }

    #[test]
    fn json_is_redacted_by_key_and_by_value_at_any_depth() {
        let mut body = json!({
            "jsonrpc": "2.0",
            "method": "tools/call",
            "params": {
                "name": "create_issue",
                "arguments": {
                    "title": "Leaked ghp_16C7e42F292c6912E7710c838347Ae178B4a in logs",
                    "auth": { "user": "ada" },
                    "githubToken": "anything at all",
                    "items": ["fine", "injected-secret-value"],
                    "max_tokens": 100
                }
            }
        });
        redact_json(&mut body, &["injected-secret-value"]);
        let args = &body["params"]["arguments"];
        assert_eq!(args["title"], format!("Leaked {REDACTED} in logs"));
        assert_eq!(args["auth"], REDACTED);
        assert_eq!(args["githubToken"], REDACTED);
        assert_eq!(args["items"], json!(["fine", REDACTED]));
        assert_eq!(args["max_tokens"], 100);
        assert_eq!(body["method"], "tools/call");
    }

    #[test]
    fn bodies_that_are_not_json_are_redacted_as_text() {
        let body = "not json: password=hunter2 ghp_16C7e42F292c6912E7710c838347Ae178B4a";
        assert_eq!(redact_body(body, &["hunter2"]), format!("not json: password={REDACTED} {REDACTED}"));
    }

    #[test]
    fn each_message_of_an_event_stream_is_redacted_as_json() {
        let body = "id: 0/0\nretry: 3000\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"structuredContent\":{\"password\":\"hunter2\",\"user\":\"ada\"}}}\nid: 1/0\n\n";
        let redacted = redact_body(body, &[]);
        assert_eq!(
            redacted,
            format!(
                "id: 0/0\nretry: 3000\n\ndata: {{\"id\":2,\"jsonrpc\":\"2.0\",\"result\":{{\"structuredContent\":{{\"password\":\"{REDACTED}\",\"user\":\"ada\"}}}}}}\nid: 1/0\n\n"
            )
        );
    }

    #[test]
    fn a_body_is_kept_as_it_is_only_when_redaction_would_not_change_it() {
        let kept = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"bench"}}}"#,
            "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}\n\n",
            "plain text",
        ];
        for body in kept {
            assert!(holds_nothing_to_redact(body, &["injected-secret"]), "{body}");
            assert_eq!(redact_body(body, &["injected-secret"]), body);
        }
        // Each of these is changed by redaction, or could be: the full path looks at it.
        let looked_at = [
            r#"{"api_key":"x"}"#,
            r#"{"PrivateKey":"x"}"#,
            r#"{"\u0074oken":"x"}"#,
            "{\"api\u{212A}ey\":\"x\"}",
            r#"{"a":"http://x","b":"y:z@w"}"#,
            r#"{"note":"ghp_16C7e42F292c6912E7710c838347Ae178B4a"}"#,
            r#"{"echo":"injected-secret"}"#,
        ];
        for body in looked_at {
            assert!(!holds_nothing_to_redact(body, &["injected-secret"]), "{body}");
        }
        // A known secret at either end of a text, short or long.
        for filler in [1, LONG_TEXT] {
            let text = "a".repeat(filler);
            assert!(holds(&format!("injected-secret{text}"), "injected-secret"));
            assert!(holds(&format!("{text}injected-secret"), "injected-secret"));
            assert!(!holds(&format!("{text}injected-secre"), "injected-secret"));
        }
        assert_eq!(redact_body(r#"{"\u0074oken":"x"}"#, &[]), format!(r#"{{"token":"{REDACTED}"}}"#));
        assert_eq!(redact_body(r#"{"a":"http://x","b":"y:z@w"}"#, &[]), r#"{"a":"http://x","b":"y:z@w"}"#);
    }

    #[test]
    fn headers_are_redacted_by_name() {
        assert_eq!(redact_header("Authorization", "Bearer x", &[]), REDACTED);
        assert_eq!(redact_header("X-Api-Key", "abc", &[]), REDACTED);
        assert_eq!(redact_header("Cookie", "a=b", &[]), REDACTED);
        assert_eq!(redact_header("User-Agent", "curl/8", &[]), "curl/8");
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 16), ("héllo", false));
        assert_eq!(truncate("héllo", 2), ("h", true));
        assert_eq!(truncate("héllo", 3), ("hé", true));
    }
}
