//! Validated parts of a service definition.

use std::collections::BTreeMap;

use url::Url;

/// Headers the gateway sets itself; a service may not override them.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "content-type",
    "accept",
    "connection",
    "transfer-encoding",
    "upgrade",
    "mcp-session-id",
    "mcp-protocol-version",
    "te",
];

pub const TOKEN_PLACEHOLDER: &str = "{token}";

/// How the gateway reaches a service: over Streamable HTTP, or through a child process per
/// session (operators' services only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Stdio,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Stdio => "stdio",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Transport {
    type Error = String;

    fn try_from(stored: String) -> Result<Transport, String> {
        match stored.as_str() {
            "http" => Ok(Transport::Http),
            "stdio" => Ok(Transport::Stdio),
            other => Err(format!("unknown transport {other:?}")),
        }
    }
}

/// Where the calling user's credential goes: a header whose value template holds `{token}`,
/// e.g. `Authorization: Bearer {token}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialPlacement {
    pub header: String,
    pub template: String,
}

impl CredentialPlacement {
    pub fn parse(raw: &str) -> Result<CredentialPlacement, String> {
        let (header, template) = parse_header_line(raw)?;
        if !template.contains(TOKEN_PLACEHOLDER) {
            return Err(format!(
                "The value must contain {TOKEN_PLACEHOLDER}, e.g. Authorization: Bearer {TOKEN_PLACEHOLDER}"
            ));
        }
        Ok(CredentialPlacement { header, template })
    }

    /// The header with the token in place.
    pub fn render(&self, token: &str) -> (String, String) {
        (self.header.clone(), self.template.replace(TOKEN_PLACEHOLDER, token))
    }
}

impl std::fmt::Display for CredentialPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.header, self.template)
    }
}

/// Whether `name` is an HTTP field name (RFC 9110 `token`).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `Name: value` with a valid, non-reserved header name and a value without line breaks.
fn parse_header_line(line: &str) -> Result<(String, String), String> {
    let Some((name, value)) = line.split_once(':') else {
        return Err(format!("\"{}\" is not a Name: value header", line.trim()));
    };
    let (name, value) = (name.trim(), value.trim());
    if !is_header_name(name) {
        return Err(format!("\"{name}\" is not a valid header name"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("{name} is set by the gateway and cannot be configured"));
    }
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(format!("the value of {name} must be one non-empty line"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// Extra headers sent upstream, one `Name: value` per line; blank lines are ignored.
pub fn parse_headers(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut headers = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, value) = parse_header_line(line)?;
        if headers.keys().any(|k: &String| k.eq_ignore_ascii_case(&name)) {
            return Err(format!("{name} is given twice"));
        }
        headers.insert(name, value);
    }
    Ok(headers)
}

/// An upstream Streamable HTTP endpoint: http or https, with a host and no credentials in it.
pub fn parse_upstream_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim())
        .map_err(|_| "Enter a full URL, e.g. https://mcp.example.com/mcp".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("The upstream must be an http:// or https:// URL.".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("Put credentials in a header or a service token, not in the URL.".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_placement_needs_a_header_and_the_placeholder() {
        let placement = CredentialPlacement::parse("Authorization: Bearer {token}").unwrap();
        assert_eq!(placement.render("abc"), ("Authorization".into(), "Bearer abc".into()));
        assert!(CredentialPlacement::parse("Authorization: Bearer").is_err());
        assert!(CredentialPlacement::parse("Bearer {token}").is_err());
        assert!(CredentialPlacement::parse("Bad Name: {token}").is_err());
        assert!(CredentialPlacement::parse("Host: {token}").is_err());
    }

    #[test]
    fn extra_headers_are_lines_of_name_and_value() {
        let headers = parse_headers("X-Team: platform\n\nX-Region:  eu \n").unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers["X-Region"], "eu");
        assert!(parse_headers("X-A: 1\nx-a: 2").is_err(), "duplicates");
        assert!(parse_headers("Mcp-Session-Id: 1").is_err(), "reserved");
        assert!(parse_headers("no colon").is_err());
    }

    #[test]
    fn upstream_urls_are_http_without_credentials() {
        assert!(parse_upstream_url("https://mcp.example.com/mcp").is_ok());
        assert!(parse_upstream_url("http://127.0.0.1:9000/mcp").is_ok());
        for bad in ["ftp://x/y", "mcp.example.com", "https://user:pw@mcp.example.com/", "file:///etc/passwd"]
        {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
    }
}
