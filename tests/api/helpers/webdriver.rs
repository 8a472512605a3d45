//! A W3C WebDriver client for the browser tests, over the suite's own HTTP client: the few
//! commands they use (navigate, find by CSS, click, type, read, run a script, emulate a screen,
//! take a screenshot).

use serde_json::{Value, json};

/// The WebDriver codes of the keys the journeys press.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

/// How the protocol marks an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct WebDriver {
    http: reqwest::Client,
    /// `{driver}/session/{id}`
    session: String,
}

pub struct Element<'a> {
    driver: &'a WebDriver,
    id: String,
}

impl WebDriver {
    /// Opens a browser session with these capabilities (`alwaysMatch`).
    pub async fn connect(driver_url: &str, capabilities: Value) -> Result<WebDriver, String> {
        let http = reqwest::Client::new();
        let body = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let answer =
            http.post(format!("{driver_url}/session")).json(&body).send().await.map_err(|e| e.to_string())?;
        let value = value_of(answer).await?;
        let id = value["sessionId"].as_str().ok_or("no session id")?;
        Ok(WebDriver { http, session: format!("{driver_url}/session/{id}") })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let request = self.http.request(method, format!("{}{path}", self.session));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        value_of(request.send().await.map_err(|e| e.to_string())?).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.post("/url", json!({ "url": url })).await.map(drop)
    }

    /// The path of the page the browser shows.
    pub async fn path(&self) -> Result<String, String> {
        let url = self.get("/url").await?;
        let url = reqwest::Url::parse(url.as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
        Ok(url.path().to_owned())
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Result<Element<'_>, String> {
        let found = self.post("/element", json!({ "using": "css selector", "value": css })).await?;
        let id = found[ELEMENT].as_str().ok_or_else(|| format!("no element for {css}"))?;
        Ok(Element { driver: self, id: id.to_owned() })
    }

    /// Runs a script in the page and returns what it returns.
    pub async fn execute(&self, script: &str) -> Result<Value, String> {
        self.post("/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// Runs a script that ends by calling its last argument, and returns what it passed.
    pub async fn execute_async(&self, script: &str) -> Result<Value, String> {
        self.post("/execute/async", json!({ "script": script, "args": [] })).await
    }

    /// Sends a Chrome DevTools command (chromedriver's extension), e.g. to emulate a screen.
    pub async fn devtools(&self, command: &str, params: Value) -> Result<Value, String> {
        self.post("/goog/cdp/execute", json!({ "cmd": command, "params": params })).await
    }

    /// Presses keys one after another where the focus is, as a person at a keyboard does
    /// (`TAB`, `ENTER`, or text).
    pub async fn press(&self, keys: &str) -> Result<(), String> {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|key| {
                [json!({ "type": "keyDown", "value": key }), json!({ "type": "keyUp", "value": key })]
            })
            .collect();
        let body = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] });
        self.post("/actions", body).await.map(drop)
    }

    /// The screen as a PNG image.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let encoded = self.get("/screenshot").await?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    pub async fn close(&self) -> Result<(), String> {
        self.call(reqwest::Method::DELETE, "", None).await.map(drop)
    }
}

impl Element<'_> {
    fn path(&self, action: &str) -> String {
        format!("/element/{}/{action}", self.id)
    }

    pub async fn click(&self) -> Result<(), String> {
        self.driver.post(&self.path("click"), json!({})).await.map(drop)
    }

    pub async fn clear(&self) -> Result<(), String> {
        self.driver.post(&self.path("clear"), json!({})).await.map(drop)
    }

    pub async fn send_keys(&self, text: &str) -> Result<(), String> {
        self.driver.post(&self.path("value"), json!({ "text": text })).await.map(drop)
    }

    pub async fn text(&self) -> Result<String, String> {
        Ok(self.driver.get(&self.path("text")).await?.as_str().unwrap_or_default().to_owned())
    }

    /// A DOM property, e.g. an input's `value`.
    pub async fn prop(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self.driver.get(&self.path(&format!("property/{name}"))).await?.as_str().map(str::to_owned))
    }
}

/// The `value` of a WebDriver answer, or its error.
async fn value_of(answer: reqwest::Response) -> Result<Value, String> {
    let status = answer.status();
    let body: Value = answer.json().await.map_err(|e| e.to_string())?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() { Ok(value) } else { Err(format!("{status}: {}", value["message"])) }
}
