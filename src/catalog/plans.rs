//! Plans: what an organization may have and use. The built-in plans keep the limits they always
//! had; the operator's file (`MCP_PLATFORM_SERVICES_FILE`) adds plans and may change built-in
//! ones; the operator assigns one with `mcp-platform org set-plan`.
//!
//! ```toml
//! [[plan]]
//! name = "standard"
//! members = 5
//! services = 10
//! requests_per_day = 1000
//! requests_per_minute = 60   # per API key; a key may be given its own at creation
//! ```

use serde::Deserialize;

/// The plan of organizations that were given none.
pub const DEFAULT_PLAN: &str = "free";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    /// Active members and open invitations; `None` is no limit.
    pub members: Option<u32>,
    pub services: Option<u32>,
    /// Requests relayed upstream per UTC day (not counting initialize, ping and
    /// server/discover, notifications or refusals).
    pub requests_per_day: Option<u32>,
    /// The default rate limit of each API key, in requests per minute.
    pub requests_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    name: String,
    members: Option<u32>,
    services: Option<u32>,
    requests_per_day: Option<u32>,
    requests_per_minute: Option<u32>,
}

fn built_in() -> Vec<Plan> {
    let plan = |name: &str, members, services, requests_per_day, requests_per_minute| Plan {
        name: name.to_owned(),
        members,
        services,
        requests_per_day,
        requests_per_minute,
    };
    vec![
        plan("free", Some(10), Some(3), Some(10_000), Some(600)),
        plan("standard", Some(5), Some(10), Some(1_000), Some(60)),
        plan("team", Some(100), Some(25), Some(1_000_000), Some(6_000)),
        plan("enterprise", None, None, None, None),
    ]
}

/// Every plan the platform knows: the built-in ones as the operator's file left them, and the
/// file's own.
#[derive(Debug, Clone)]
pub struct Plans(Vec<Plan>);

impl Default for Plans {
    fn default() -> Plans {
        Plans(built_in())
    }
}

impl Plans {
    /// The built-in plans with the file's plans added or put in their place.
    pub(super) fn with(raw: Vec<RawPlan>) -> Result<Plans, String> {
        let mut plans = built_in();
        let mut seen: Vec<String> = Vec::new();
        for raw in raw {
            let name = raw.name.trim().to_owned();
            if name.is_empty()
                || name.len() > 40
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(format!("plan \"{name}\": name: letters, digits and dashes, at most 40"));
            }
            if seen.contains(&name) {
                return Err(format!("plan \"{name}\" is defined twice"));
            }
            for (field, value) in
                [("requests_per_minute", raw.requests_per_minute), ("requests_per_day", raw.requests_per_day)]
            {
                if value == Some(0) {
                    return Err(format!(
                        "plan \"{name}\": {field}: must be at least 1 (leave it out for no limit)"
                    ));
                }
            }
            seen.push(name.clone());
            let plan = Plan {
                name,
                members: raw.members,
                services: raw.services,
                requests_per_day: raw.requests_per_day,
                requests_per_minute: raw.requests_per_minute,
            };
            match plans.iter_mut().find(|p| p.name == plan.name) {
                Some(existing) => *existing = plan,
                None => plans.push(plan),
            }
        }
        Ok(Plans(plans))
    }

    pub fn find(&self, name: &str) -> Option<&Plan> {
        self.0.iter().find(|p| p.name == name)
    }

    /// The organization's plan; a name the configuration no longer has gets the default plan's
    /// limits.
    pub fn of(&self, name: &str) -> &Plan {
        self.find(name).or_else(|| self.find(DEFAULT_PLAN)).unwrap_or(&self.0[0])
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, per_day: Option<u32>) -> RawPlan {
        RawPlan {
            name: name.into(),
            members: Some(2),
            services: None,
            requests_per_day: per_day,
            requests_per_minute: None,
        }
    }

    #[test]
    fn built_in_plans_keep_their_limits_and_the_file_adds_and_changes_plans() {
        let plans = Plans::default();
        assert_eq!(plans.of("free").members, Some(10));
        assert_eq!(plans.of("team").requests_per_day, Some(1_000_000));
        assert_eq!(plans.of("standard").requests_per_day, Some(1_000));
        assert_eq!(plans.of("standard").members, Some(5));
        assert_eq!(plans.of("standard").services, Some(10));
        assert_eq!(plans.of("no-such-plan").name, "free");

        let plans = Plans::with(vec![raw("pilot", Some(50)), raw("team", None)]).unwrap();
        assert_eq!(plans.of("pilot").requests_per_day, Some(50));
        assert_eq!(plans.of("team").requests_per_day, None, "the file's team replaces the built-in one");
        assert_eq!(plans.names(), ["free", "standard", "team", "enterprise", "pilot"]);
    }

    #[test]
    fn bad_plans_are_named() {
        assert!(Plans::with(vec![raw("a", None), raw("a", None)]).unwrap_err().contains("defined twice"));
        assert!(Plans::with(vec![raw("no spaces", None)]).unwrap_err().contains("name"));
        assert!(Plans::with(vec![raw("zero", Some(0))]).unwrap_err().contains("requests_per_day"));
    }
}
