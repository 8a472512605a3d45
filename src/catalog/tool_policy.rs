//! Which tools of a service the gateway offers, and to whom: an organization's policy for each
//! service (every tool, or an allow-list; and the roles that may call a tool only some may), the
//! operator's default for a system service, and an API key's own narrowing to some services and
//! tools. What a caller may not call is left out of `tools/list` and refused on `tools/call`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::Role;

/// Longest tool name accepted in a policy or a key's reach.
const NAME_LIMIT: usize = 128;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPolicy {
    /// `None`: every tool the upstream lists; else only these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered: Option<BTreeSet<String>>,
    /// Tools only some roles may call, with those roles.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, BTreeSet<Role>>,
}

impl ToolPolicy {
    pub fn allows(&self, tool: &str, role: Role) -> bool {
        self.offered.as_ref().is_none_or(|offered| offered.contains(tool))
            && self.roles.get(tool).is_none_or(|roles| roles.contains(&role))
    }

    /// Every tool to every role.
    pub fn is_open(&self) -> bool {
        self.offered.is_none() && self.roles.is_empty()
    }

    /// A stored policy; a stored value that cannot be read offers nothing (and says so in the log).
    pub fn from_stored(text: &str) -> ToolPolicy {
        serde_json::from_str(text).unwrap_or_else(|e| {
            tracing::error!(error = %e, "a stored tool policy is unreadable: no tool is offered");
            ToolPolicy { offered: Some(BTreeSet::new()), roles: BTreeMap::new() }
        })
    }

    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("a policy serializes")
    }

    /// The policy an admin wrote: `listed` says whether only the `offered` tools (one per line)
    /// are offered; `roles` has a line per tool only some roles may call, `tool: role role`.
    /// Errors name the field and what is wrong.
    pub fn from_form(listed: bool, offered: &str, roles: &str) -> Result<ToolPolicy, (&'static str, String)> {
        let mut policy = ToolPolicy::default();
        if listed {
            let names = offered.lines().map(str::trim).filter(|l| !l.is_empty());
            let names: Result<BTreeSet<String>, String> = names.map(tool_name).collect();
            policy.offered = Some(names.map_err(|e| ("offered", e))?);
        }
        for line in roles.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((tool, who)) = line.split_once(':') else {
                return Err(("roles", format!("\"{line}\": write the tool, a colon, then the roles")));
            };
            let tool = tool_name(tool.trim()).map_err(|e| ("roles", e))?;
            let who: Result<BTreeSet<Role>, String> =
                who.split([' ', ',']).filter(|r| !r.is_empty()).map(Role::parse).collect();
            let who = who.map_err(|e| ("roles", e))?;
            if who.is_empty() {
                return Err(("roles", format!("\"{tool}\": name at least one role")));
            }
            policy.roles.insert(tool, who);
        }
        Ok(policy)
    }

    /// The allow-list as the form shows it, one tool per line.
    pub fn offered_text(&self) -> String {
        self.offered.iter().flatten().map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    /// The role restrictions as the form shows them.
    pub fn roles_text(&self) -> String {
        self.roles
            .iter()
            .map(|(tool, roles)| {
                let roles: Vec<&str> = roles.iter().rev().map(|r| r.as_str()).collect();
                format!("{tool}: {}", roles.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tool_name(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > NAME_LIMIT || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Err(format!("\"{name}\" is not a tool name (1 to {NAME_LIMIT} characters, no spaces)"))
    } else {
        Ok(name.to_owned())
    }
}

/// An API key's own narrowing, chosen at its creation: `None` reaches every service and tool
/// its scopes allow; else these services, each whole or some of its tools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyReach(Option<BTreeMap<String, Option<BTreeSet<String>>>>);

impl KeyReach {
    pub fn everything() -> KeyReach {
        KeyReach(None)
    }

    /// As stored: `service` or `service/tool` entries separated by spaces.
    pub fn from_stored(text: Option<&str>) -> KeyReach {
        let Some(text) = text else { return KeyReach(None) };
        let mut reach: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
        for entry in text.split_whitespace() {
            match entry.split_once('/') {
                Some((service, tool)) => {
                    if let Some(tools) =
                        reach.entry(service.to_owned()).or_insert_with(|| Some(BTreeSet::new()))
                    {
                        tools.insert(tool.to_owned());
                    }
                }
                None => {
                    reach.insert(entry.to_owned(), None);
                }
            }
        }
        KeyReach(Some(reach))
    }

    /// What a member wrote at the key's creation: entries separated by spaces or commas; empty
    /// reaches everything.
    pub fn from_input(text: &str) -> Result<KeyReach, String> {
        let entries: Vec<&str> = text.split([' ', ',', '\n', '\r', '\t']).filter(|e| !e.is_empty()).collect();
        if entries.is_empty() {
            return Ok(KeyReach(None));
        }
        for entry in &entries {
            let (service, tool) = entry.split_once('/').unwrap_or((entry, "x"));
            if service.is_empty() || tool_name(tool).is_err() || tool.contains('/') {
                return Err(format!("\"{entry}\" is neither a service nor service/tool"));
            }
        }
        Ok(KeyReach::from_stored(Some(&entries.join(" "))))
    }

    pub fn to_stored(&self) -> Option<String> {
        let reach = self.0.as_ref()?;
        let entries: Vec<String> = reach
            .iter()
            .flat_map(|(service, tools)| match tools {
                None => vec![service.clone()],
                Some(tools) => tools.iter().map(|tool| format!("{service}/{tool}")).collect(),
            })
            .collect();
        Some(entries.join(" "))
    }

    /// The services the key names, when it names any.
    pub fn services(&self) -> Option<impl Iterator<Item = &str>> {
        self.0.as_ref().map(|reach| reach.keys().map(String::as_str))
    }

    pub fn allows_service(&self, service: &str) -> bool {
        self.0.as_ref().is_none_or(|reach| reach.contains_key(service))
    }

    pub fn allows_tool(&self, service: &str, tool: &str) -> bool {
        self.0.as_ref().is_none_or(|reach| {
            reach.get(service).is_some_and(|tools| tools.as_ref().is_none_or(|tools| tools.contains(tool)))
        })
    }

    /// Whether everything this reaches, `wider` reaches too.
    pub fn within(&self, wider: &KeyReach) -> bool {
        let Some(wider) = &wider.0 else { return true };
        let Some(mine) = &self.0 else { return false };
        mine.iter().all(|(service, tools)| match (wider.get(service), tools) {
            (None, _) => false,
            (Some(None), _) => true,
            (Some(Some(_)), None) => false,
            (Some(Some(allowed)), Some(tools)) => tools.is_subset(allowed),
        })
    }

    /// Whether the key leaves out some tools of `service`.
    pub fn narrows_tools_of(&self, service: &str) -> bool {
        self.0.as_ref().is_some_and(|reach| reach.get(service).is_some_and(Option::is_some))
    }

    /// For the keys page: "every service", or the services and tools.
    pub fn describe(&self) -> String {
        match &self.0 {
            None => "every service".to_owned(),
            Some(reach) => reach
                .iter()
                .map(|(service, tools)| match tools {
                    None => service.clone(),
                    Some(tools) => {
                        format!(
                            "{service} ({})",
                            tools.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
                        )
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_offers_listed_tools_to_the_roles_named() {
        let policy =
            ToolPolicy::from_form(true, "echo\nadd\n\n whoami ", "add: admin\nwhoami: admin, developer")
                .unwrap();
        assert!(policy.allows("echo", Role::Viewer));
        assert!(policy.allows("add", Role::Admin) && !policy.allows("add", Role::Developer));
        assert!(policy.allows("whoami", Role::Developer) && !policy.allows("whoami", Role::Viewer));
        assert!(!policy.allows("big", Role::Admin), "not listed");
        assert_eq!(ToolPolicy::from_stored(&policy.to_stored()), policy);
        assert_eq!(policy.offered_text(), "add\necho\nwhoami");
        assert_eq!(policy.roles_text(), "add: admin\nwhoami: admin developer");

        let open = ToolPolicy::from_form(false, "ignored", "").unwrap();
        assert!(open.is_open() && open.allows("anything", Role::Viewer));
        assert_eq!(ToolPolicy::from_form(true, "a b", "").unwrap_err().0, "offered");
        assert_eq!(ToolPolicy::from_form(false, "", "add admin").unwrap_err().0, "roles");
        assert_eq!(ToolPolicy::from_form(false, "", "add: owner").unwrap_err().0, "roles");
        assert_eq!(ToolPolicy::from_form(false, "", "add:").unwrap_err().0, "roles");
        assert!(!ToolPolicy::from_stored("not json").allows("echo", Role::Admin));
    }

    #[test]
    fn a_key_reaches_the_services_and_tools_it_names() {
        let everything = KeyReach::from_input(" ,").unwrap();
        assert_eq!(everything, KeyReach::everything());
        assert!(everything.allows_service("x") && everything.allows_tool("x", "y"));
        assert_eq!(everything.to_stored(), None);

        let some = KeyReach::from_input("github, tools/echo tools/add").unwrap();
        assert!(some.allows_service("github") && some.allows_tool("github", "anything"));
        assert!(some.allows_tool("tools", "echo") && !some.allows_tool("tools", "big"));
        assert!(!some.allows_service("jira") && !some.allows_tool("jira", "search"));
        assert!(some.narrows_tools_of("tools") && !some.narrows_tools_of("github"));
        assert_eq!(KeyReach::from_stored(some.to_stored().as_deref()), some);
        assert_eq!(some.describe(), "github; tools (add, echo)");
        assert!(KeyReach::from_input("github").unwrap().within(&some));
        assert!(KeyReach::from_input("tools/echo").unwrap().within(&some));
        assert!(!KeyReach::from_input("tools").unwrap().within(&some), "all of tools is wider than two");
        assert!(!KeyReach::from_input("tools/big").unwrap().within(&some));
        assert!(!KeyReach::from_input("jira").unwrap().within(&some));
        assert!(!everything.within(&some) && some.within(&everything) && everything.within(&everything));
        assert!(KeyReach::from_input("/echo").is_err());
        assert!(KeyReach::from_input("a/b/c").is_err());
    }
}
