//! Validated domain values. Each `parse` is the only way in, so holding one is proof it is valid.

use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The three roles of DESIGN.md section 4, ordered from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Developer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Developer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role \"{s}\" (expected admin, developer or viewer)"))
    }

    /// Whether this role may use something that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Role::parse(&s)
    }
}

/// API key scopes (DESIGN.md section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    McpRead,
    McpWrite,
    LogsRead,
    KeysWrite,
    TokensWrite,
    AdminUsers,
    AdminOrganization,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::McpRead,
        Scope::McpWrite,
        Scope::LogsRead,
        Scope::KeysWrite,
        Scope::TokensWrite,
        Scope::AdminUsers,
        Scope::AdminOrganization,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::McpRead => "mcp:read",
            Scope::McpWrite => "mcp:write",
            Scope::LogsRead => "logs:read",
            Scope::KeysWrite => "keys:write",
            Scope::TokensWrite => "tokens:write",
            Scope::AdminUsers => "admin:users",
            Scope::AdminOrganization => "admin:organization",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// The least role whose keys may hold this scope; viewers hold no keys at all.
    pub fn needs(self) -> Role {
        match self {
            Scope::McpRead | Scope::McpWrite | Scope::LogsRead | Scope::KeysWrite | Scope::TokensWrite => {
                Role::Developer
            }
            Scope::AdminUsers | Scope::AdminOrganization => Role::Admin,
        }
    }

    pub fn allowed_for(self, role: Role) -> bool {
        role != Role::Viewer && role.allows(self.needs())
    }
}

/// A set of scopes, stored space-separated; held as one bit per scope (each key's caller is
/// made on every call, so copying it costs nothing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const DEFAULT: [Scope; 2] = [Scope::McpRead, Scope::McpWrite];

    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Scopes {
        Scopes(scopes.into_iter().fold(0, |bits, scope| bits | Scopes::bit(scope)))
    }

    fn bit(scope: Scope) -> u8 {
        1 << scope as u8
    }

    /// Parses a stored or submitted list; unknown names are an error naming them.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for name in names {
            let scope = Scope::parse(name).ok_or_else(|| format!("unknown scope \"{name}\""))?;
            scopes.0 |= Scopes::bit(scope);
        }
        Ok(scopes)
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0 & Scopes::bit(scope) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// In the order of `Scope::ALL`.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        Scope::ALL.into_iter().filter(|&scope| self.contains(scope))
    }

    /// Only the scopes `role` may hold.
    pub fn limited_to(&self, role: Role) -> Scopes {
        Scopes::new(self.iter().filter(|s| s.allowed_for(role)))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(|s| s.as_str()).collect();
        f.write_str(&names.join(" "))
    }
}

/// An email address, trimmed and lower-cased so that one person has one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err("Enter an email address.");
        }
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("Enter a valid email address.");
        }
        match s.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.') =>
            {
                Ok(Email(s))
            }
            _ => Err("Enter a valid email address, like name@example.com."),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service name as it appears in URLs and token names: lower-case letters, digits, `-` and
/// `_`, starting with a letter, at most 64 characters (e.g. `github`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn parse(raw: &str) -> Result<ServiceName, &'static str> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("Enter the service name, e.g. github.");
        }
        if s.len() > 64 {
            return Err("Use at most 64 characters.");
        }
        let mut chars = s.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        if !starts_with_letter
            || !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err("Use lower-case letters, digits, - and _, starting with a letter.");
        }
        Ok(ServiceName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new password that meets the policy. Existing passwords are checked only by hash.
pub struct NewPassword(SecretString);

impl NewPassword {
    pub const MIN_LEN: usize = 12;
    pub const MAX_LEN: usize = 256;

    pub fn parse(raw: &str) -> Result<NewPassword, String> {
        let len = raw.chars().count();
        if len < Self::MIN_LEN {
            return Err(format!("Use at least {} characters.", Self::MIN_LEN));
        }
        if len > Self::MAX_LEN {
            return Err(format!("Use at most {} characters.", Self::MAX_LEN));
        }
        Ok(NewPassword(SecretString::from(raw.to_owned())))
    }

    pub fn into_secret(self) -> SecretString {
        self.0
    }
}

/// An organization's display name.
#[derive(Debug, Clone)]
pub struct OrganizationName(String);

impl OrganizationName {
    pub fn parse(raw: &str) -> Result<OrganizationName, &'static str> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("Enter the organization's name.");
        }
        if s.chars().count() > 100 {
            return Err("Use at most 100 characters.");
        }
        if s.chars().any(char::is_control) {
            return Err("The name cannot contain control characters.");
        }
        Ok(OrganizationName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A URL-safe form of the name: lower-case ASCII letters and digits joined by dashes.
    pub fn slug(&self) -> String {
        let mut slug = String::new();
        for c in self.0.chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c.to_ascii_lowercase());
            } else if !slug.ends_with('-') && !slug.is_empty() {
                slug.push('-');
            }
        }
        let slug = slug.trim_end_matches('-');
        if slug.is_empty() { "org".to_owned() } else { slug.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_capability() {
        assert!(Role::Admin.allows(Role::Developer));
        assert!(Role::Developer.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Developer));
        assert!(!Role::Developer.allows(Role::Admin));
        assert!(Role::parse("owner").is_err());
    }

    #[test]
    fn scopes_follow_roles() {
        assert!(!Scope::McpRead.allowed_for(Role::Viewer), "viewers hold no keys");
        assert!(Scope::McpWrite.allowed_for(Role::Developer));
        assert!(!Scope::AdminUsers.allowed_for(Role::Developer));
        assert!(Scope::AdminOrganization.allowed_for(Role::Admin));
        let all = Scopes::new(Scope::ALL);
        assert_eq!(
            all.limited_to(Role::Developer).to_string(),
            "mcp:read mcp:write logs:read keys:write tokens:write"
        );
        let mcp = Scopes::parse("mcp:write mcp:read".split(' ')).unwrap();
        assert_eq!(mcp.to_string(), "mcp:read mcp:write");
        assert!(mcp.contains(Scope::McpWrite) && !mcp.contains(Scope::LogsRead));
        assert!(Scopes::default().is_empty() && !mcp.is_empty());
        assert_eq!(mcp, Scopes::new(Scopes::DEFAULT));
        assert!(Scopes::parse(["root"]).is_err());
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse("  Ada@Example.COM ").unwrap().as_str(), "ada@example.com");
        for bad in ["", "ada", "ada@", "@example.com", "ada@example", "a b@example.com", "a@b@c.com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn passwords_need_twelve_characters() {
        assert!(NewPassword::parse("short").is_err());
        assert!(NewPassword::parse("twelve chars").is_ok());
        assert!(NewPassword::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn service_names_are_url_safe() {
        assert_eq!(ServiceName::parse(" github ").unwrap().as_str(), "github");
        assert!(ServiceName::parse("git-lab_2").is_ok());
        for bad in ["", "GitHub", "2fa", "a/b", "a b", &"a".repeat(65)] {
            assert!(ServiceName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(OrganizationName::parse("Acme, Inc.").unwrap().slug(), "acme-inc");
        assert_eq!(OrganizationName::parse("!!!").unwrap().slug(), "org");
    }
}
