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

/// Credential formats found inside any text.
static PATTERNS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        r"|\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}",
        r"|\bgithub_pat_[A-Za-z0-9_]{20,}",
        r"|\bglpat-[A-Za-z0-9_\-]{20,}",
        r"|\b(?:sk|rk)_live_[A-Za-z0-9]{10,}",
        r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}",
        r"|\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}",
        r"|\bmcp_sk_[A-Za-z0-9]{20,}",
        r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/\-]+=*",
    ))
    .expect("redaction patterns compile")
});

/// `user:password@` in URLs.
static URL_CREDENTIALS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@:]+:[^\s/@]+@").expect("URL pattern compiles")
});

/// Whether a key name names a secret.
pub fn is_sensitive_key(key: &str) -> bool {
    let words = split_words(key);
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
        if out.contains(secret) {
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

/// Redacts a body: as JSON when it parses, as text otherwise.
pub fn redact_body(body: &str, known: &[&str]) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(mut value) => {
            redact_json(&mut value, known);
            value.to_string()
        }
        Err(_) => redact_text(body, known).into_owned(),
    }
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
    fn credential_formats_are_found_in_text() {
        let samples = [
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "gho_16C7e42F292c6912E7710c838347Ae178B4a",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "glpat-xxxxxxxxxxxxxxxxxxxx",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "rk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "mcp_sk_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ012345",
        ];
        for secret in samples {
            let text = format!("the value is {secret} here");
            let redacted = redact_text(&text, &[]);
            assert_eq!(redacted, format!("the value is {REDACTED} here"), "{secret}");
        }
        let bearer = redact_text("Authorization: Bearer abc.def-ghi_123==", &[]);
        assert_eq!(bearer, format!("Authorization: {REDACTED}"));
        let pem = "x -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY----- y";
        assert_eq!(redact_text(pem, &[]), format!("x {REDACTED} y"));
        let url = redact_text("clone https://ada:s3cr3t@github.com/acme/repo.git", &[]);
        assert_eq!(url, format!("clone https://{REDACTED}@github.com/acme/repo.git"));
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
