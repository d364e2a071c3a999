//! Optional planner: an OpenAI-compatible chat endpoint (llama.cpp server,
//! Ollama) that turns multi-step requests into several actions.
//!
//! The planner is a proposer, never an authority. It gets the request, the
//! arguments found in it, and a short list of candidate apps (the engine's best
//! matches for the whole request and for each of its clauses, so a big catalog
//! is never sent whole), and may answer only through tool calls into the same
//! action set as the engine: `launch_app(app_id, args)`, `ask_user(question,
//! app_ids)`, `no_action(reason)`. Every proposed action then passes
//! [`super::policy::check`] like the engine's own: an unknown app, an argument
//! not in the request, or an argument the app cannot take drops the step, and
//! the explanation says why.
//!
//! Nothing leaves the machine: the endpoint must be on a loopback address unless
//! the caller explicitly allows another host, and no proxy is used.
//! Responses are parsed leniently: `tool_calls` with `arguments` as a JSON
//! string (OpenAI, llama.cpp, Ollama's `/v1`) or as an object (Ollama's
//! `/api/chat`), the legacy `function_call`, and, for models without tool
//! support, a JSON tool call written in the message content.

use std::time::Duration;

use serde_json::{json, Value};

use super::action::{Action, Candidate};
use super::args::Arg;
use super::catalog::Catalog;
use super::policy;

/// Errors of the planner.
#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    #[error("planner URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("planner at {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("planner response is not valid JSON: {0}")]
    NotJson(String),
    #[error("planner response has no tool call (message content: {0:?})")]
    NoToolCall(String),
    #[error("planner tool call {name:?}: {reason}")]
    BadToolCall { name: String, reason: String },
}

/// One tool call, as parsed from a response.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

/// One app shown to the planner.
#[derive(Debug, Clone)]
pub struct PlannerCandidate {
    pub app_id: String,
    pub name: String,
    pub description: String,
    pub score: f32,
}

/// Where and how to reach the planner.
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    /// Base URL (`http://127.0.0.1:8080`) or the full chat-completions URL.
    pub url: String,
    pub model: String,
    pub timeout: Duration,
    pub allow_remote: bool,
}

/// The chat-completions URL for a base URL.
pub fn endpoint(url: &str, allow_remote: bool) -> Result<String, PlannerError> {
    let bad = |reason: &str| PlannerError::BadUrl { url: url.to_string(), reason: reason.to_string() };
    let rest =
        url.strip_prefix("http://").ok_or_else(|| bad("only http:// endpoints on this machine are supported"))?;
    let host_port = rest.split('/').next().unwrap_or("");
    let host = if let Some(h) = host_port.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    let local = host == "localhost" || host == "::1" || host.starts_with("127.");
    if !local && !allow_remote {
        return Err(bad(
            "not a loopback address; requests must not leave the machine (pass --planner-allow-remote to override)",
        ));
    }
    let trimmed = url.trim_end_matches('/');
    Ok(if trimmed.ends_with("/chat/completions") {
        trimmed.to_string()
    } else if trimmed.ends_with("/v1") {
        format!("{trimmed}/chat/completions")
    } else {
        format!("{trimmed}/v1/chat/completions")
    })
}

/// The tool definitions sent with every request.
pub fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "launch_app",
            "description": "Launch one application from the candidate list. Call once per app for a request with several steps, in order.",
            "parameters": {"type": "object", "properties": {
                "app_id": {"type": "string", "description": "desktop file ID from the candidate list"},
                "args": {"type": "array", "items": {"type": "string"}, "description": "files or URLs from the request to open; only ones the user wrote"}
            }, "required": ["app_id"]}
        }},
        {"type": "function", "function": {
            "name": "ask_user",
            "description": "Ask the user which app they meant when the request is ambiguous.",
            "parameters": {"type": "object", "properties": {
                "question": {"type": "string"},
                "app_ids": {"type": "array", "items": {"type": "string"}}
            }, "required": ["question"]}
        }},
        {"type": "function", "function": {
            "name": "no_action",
            "description": "Nothing in the candidate list serves the request.",
            "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}
        }}
    ])
}

/// The request body for the chat endpoint.
pub fn request_body(model: &str, request: &str, args: &[Arg], candidates: &[PlannerCandidate]) -> Value {
    let mut sys = String::from(
        "You are the intent planner of RayOS. Turn the user's request into tool calls. \
         Use only apps from this list, by app_id, and only files or URLs the user wrote. \
         For a request with several steps call launch_app once per step, in order.\nApps:\n",
    );
    for c in candidates {
        sys.push_str(&format!("- {}: {} — {}\n", c.app_id, c.name, c.description));
    }
    if !args.is_empty() {
        sys.push_str("Files and URLs in the request: ");
        sys.push_str(&args.iter().map(|a| a.value.as_str()).collect::<Vec<_>>().join(", "));
        sys.push('\n');
    }
    json!({
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": sys},
            {"role": "user", "content": request}
        ],
        "tools": tools(),
        "tool_choice": "auto"
    })
}

fn parse_arguments(name: &str, raw: &Value) -> Result<Value, PlannerError> {
    match raw {
        Value::String(s) if s.trim().is_empty() => Ok(json!({})),
        Value::String(s) => serde_json::from_str(s).map_err(|e| PlannerError::BadToolCall {
            name: name.to_string(),
            reason: format!("arguments are not JSON: {e}"),
        }),
        Value::Object(_) => Ok(raw.clone()),
        Value::Null => Ok(json!({})),
        other => Err(PlannerError::BadToolCall { name: name.to_string(), reason: format!("arguments are {other}") }),
    }
}

fn call_from(v: &Value) -> Result<Option<ToolCall>, PlannerError> {
    let f = v.get("function").unwrap_or(v);
    let Some(name) = f.get("name").and_then(Value::as_str) else {
        return Ok(None);
    };
    let raw = f.get("arguments").or_else(|| f.get("parameters")).cloned().unwrap_or(Value::Null);
    Ok(Some(ToolCall { name: name.to_string(), arguments: parse_arguments(name, &raw)? }))
}

/// Extract the tool calls of a chat response (any of the shapes in the module notes).
pub fn parse_tool_calls(body: &str) -> Result<Vec<ToolCall>, PlannerError> {
    let v: Value = serde_json::from_str(body).map_err(|e| PlannerError::NotJson(e.to_string()))?;
    let message = v
        .pointer("/choices/0/message")
        .or_else(|| v.get("message"))
        .ok_or_else(|| PlannerError::NotJson("no choices[0].message or message".into()))?;
    let mut calls = Vec::new();
    if let Some(list) = message.get("tool_calls").and_then(Value::as_array) {
        for c in list {
            if let Some(tc) = call_from(c)? {
                calls.push(tc);
            }
        }
    }
    if calls.is_empty() {
        if let Some(fc) = message.get("function_call") {
            if let Some(tc) = call_from(fc)? {
                calls.push(tc);
            }
        }
    }
    let content = message.get("content").and_then(Value::as_str).unwrap_or("");
    if calls.is_empty() && !content.trim().is_empty() {
        calls = calls_in_text(content)?;
    }
    if calls.is_empty() {
        return Err(PlannerError::NoToolCall(content.chars().take(200).collect()));
    }
    Ok(calls)
}

/// Tool calls written as JSON in a message's text (possibly in a ``` fence).
fn calls_in_text(content: &str) -> Result<Vec<ToolCall>, PlannerError> {
    let mut s = content.trim();
    if let Some(start) = s.find("```") {
        let after = &s[start + 3..];
        let after = after.trim_start_matches(|c: char| c.is_alphanumeric());
        s = after.split("```").next().unwrap_or("").trim();
    }
    let Ok(v) = serde_json::from_str::<Value>(s) else {
        return Ok(Vec::new());
    };
    let items: Vec<Value> = match v {
        Value::Array(a) => a,
        Value::Object(ref o) if o.contains_key("tool_calls") => o["tool_calls"].as_array().cloned().unwrap_or_default(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for it in &items {
        if let Some(tc) = call_from(it)? {
            out.push(tc);
        }
    }
    Ok(out)
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Turn tool calls into one action (a plan when several launches), checking
/// each launch with the policy. Returns the action and the refused steps.
pub fn to_action(
    calls: &[ToolCall],
    catalog: &Catalog,
    args: &[Arg],
    confidence_of: &dyn Fn(&str) -> f32,
) -> (Action, Vec<String>) {
    let mut launches = Vec::new();
    let mut refused = Vec::new();
    for c in calls {
        match c.name.as_str() {
            "launch_app" => {
                let Some(app_id) = c.arguments.get("app_id").and_then(Value::as_str) else {
                    refused.push("launch_app without app_id".to_string());
                    continue;
                };
                let a = Action::Launch {
                    app_id: app_id.to_string(),
                    confidence: confidence_of(app_id),
                    args: str_list(c.arguments.get("args")),
                };
                match policy::check(&a, catalog, args) {
                    Ok(()) => launches.push(a),
                    Err(e) => refused.push(format!("launch_app {app_id}: {e}")),
                }
            }
            "ask_user" => {
                let candidates: Vec<Candidate> = str_list(c.arguments.get("app_ids"))
                    .into_iter()
                    .filter_map(|id| {
                        catalog.get(&id).map(|e| Candidate {
                            app_id: id.clone(),
                            name: e.name.clone(),
                            confidence: confidence_of(&id),
                        })
                    })
                    .take(3)
                    .collect();
                let question = c.arguments.get("question").and_then(Value::as_str).map(str::to_string);
                return (Action::Clarify { candidates, question }, refused);
            }
            "no_action" => {
                let reason = c.arguments.get("reason").and_then(Value::as_str).map(str::to_string);
                if launches.is_empty() {
                    return (Action::None { reason }, refused);
                }
            }
            other => refused.push(format!("unknown tool {other:?}")),
        }
    }
    let action = match launches.len() {
        0 => Action::none_because("the planner proposed nothing the policy allows"),
        1 => launches.pop().unwrap(),
        _ => Action::Plan { steps: launches },
    };
    let action = match policy::check(&action, catalog, args) {
        Ok(()) => action,
        Err(e) => {
            refused.push(e.to_string());
            Action::none_because(format!("policy: {e}"))
        }
    };
    (action, refused)
}

/// Send the request to the endpoint and return the raw response body.
pub fn call(cfg: &PlannerConfig, body: &Value) -> Result<String, PlannerError> {
    let url = endpoint(&cfg.url, cfg.allow_remote)?;
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(cfg.timeout)).proxy(None).build().into();
    let http = |reason: String| PlannerError::Http { url: url.clone(), reason };
    let mut resp = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .map_err(|e| http(e.to_string()))?;
    resp.body_mut().with_config().limit(4 << 20).read_to_string().map_err(|e| http(e.to_string()))
}

/// Clauses of a request ("open x and then start y" → ["open x", "start y"]),
/// used to gather candidates for each step.
pub fn clauses(request: &str) -> Vec<String> {
    let mut parts = vec![request.to_string()];
    for sep in [" and then ", ", then ", " then ", "; ", ", ", " and "] {
        parts = parts.iter().flat_map(|p| p.split(sep).map(str::to_string).collect::<Vec<_>>()).collect();
    }
    parts.into_iter().map(|p| p.trim().to_string()).filter(|p| p.split_whitespace().count() >= 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::args::extract;
    use crate::intent::catalog::parse_desktop;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::path::Path;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/planner").join(name)).unwrap()
    }

    fn catalog() -> Catalog {
        let e = |id: &str, exec: &str| {
            parse_desktop(id, &format!("[Desktop Entry]\nType=Application\nName={id}\nExec={exec}\n")).unwrap().unwrap()
        };
        Catalog::from_entries(vec![
            e("org.gnome.Evince.desktop", "evince %U"),
            e("foot.desktop", "foot"),
            e("firefox-esr.desktop", "firefox-esr %u"),
        ])
    }

    #[test]
    fn parses_openai_tool_calls_with_string_arguments() {
        let calls = parse_tool_calls(&fixture("openai-two-tool-calls.json")).unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "launch_app");
        assert_eq!(calls[0].arguments["app_id"], "org.gnome.Evince.desktop");
        assert_eq!(calls[0].arguments["args"][0], "~/Documents/report.pdf");
        assert_eq!(calls[1].arguments["app_id"], "foot.desktop");
    }

    #[test]
    fn parses_llamacpp_and_ollama_shapes() {
        let calls = parse_tool_calls(&fixture("llamacpp-tool-call.json")).unwrap();
        assert_eq!(
            calls,
            vec![ToolCall {
                name: "launch_app".into(),
                arguments: json!({"app_id": "firefox-esr.desktop", "args": []})
            }]
        );
        let calls = parse_tool_calls(&fixture("ollama-native-tool-call.json")).unwrap();
        assert_eq!(calls[0].arguments["app_id"], "foot.desktop");
        let calls = parse_tool_calls(&fixture("content-json-tool-call.json")).unwrap();
        assert_eq!(calls[0].name, "ask_user");
        let calls = parse_tool_calls(&fixture("legacy-function-call.json")).unwrap();
        assert_eq!(calls[0].name, "no_action");
    }

    #[test]
    fn refuses_responses_without_tool_calls_or_with_bad_arguments() {
        assert!(matches!(parse_tool_calls(&fixture("plain-text-answer.json")), Err(PlannerError::NoToolCall(_))));
        assert!(matches!(parse_tool_calls("{not json"), Err(PlannerError::NotJson(_))));
        let bad = r#"{"choices":[{"message":{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"launch_app","arguments":"{app_id: foot"}}]}}]}"#;
        assert!(matches!(parse_tool_calls(bad), Err(PlannerError::BadToolCall { .. })));
    }

    #[test]
    fn every_proposed_step_passes_the_policy() {
        let cat = catalog();
        let req = extract("open ~/Documents/report.pdf and then give me a terminal");
        let calls = parse_tool_calls(&fixture("openai-two-tool-calls.json")).unwrap();
        let (action, refused) = to_action(&calls, &cat, &req.args, &|_| 0.5);
        assert!(refused.is_empty(), "{refused:?}");
        match action {
            Action::Plan { steps } => {
                assert_eq!(steps.len(), 2);
                assert_eq!(steps[0].launched(), Some("org.gnome.Evince.desktop"));
            }
            other => panic!("{other:?}"),
        }
        // Invented app and an argument the user never wrote: both steps dropped.
        let calls = parse_tool_calls(&fixture("hallucinated-app.json")).unwrap();
        let (action, refused) = to_action(&calls, &cat, &req.args, &|_| 0.5);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(matches!(action, Action::None { .. }));
    }

    #[test]
    fn endpoint_urls_and_locality() {
        assert_eq!(endpoint("http://127.0.0.1:8080", false).unwrap(), "http://127.0.0.1:8080/v1/chat/completions");
        assert_eq!(
            endpoint("http://localhost:11434/v1/", false).unwrap(),
            "http://localhost:11434/v1/chat/completions"
        );
        assert_eq!(
            endpoint("http://[::1]:8080/v1/chat/completions", false).unwrap(),
            "http://[::1]:8080/v1/chat/completions"
        );
        assert!(endpoint("http://10.0.0.5:8080", false).is_err());
        assert!(endpoint("https://127.0.0.1", false).is_err());
        assert!(endpoint("http://10.0.0.5:8080", true).is_ok());
    }

    #[test]
    fn clauses_split_steps() {
        assert_eq!(clauses("open report.pdf and then start a terminal"), ["open report.pdf", "start a terminal"]);
        assert_eq!(clauses("open a terminal"), ["open a terminal"]);
    }

    /// A loopback server that answers one request with a recorded body and
    /// hands back what it received.
    fn serve_once(body: String) -> (String, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line.to_ascii_lowercase().starts_with("content-length:") {
                    len = line[15..].trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut req_body = vec![0; len];
            r.read_exact(&mut req_body).unwrap();
            let mut s = s;
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", body.len(), body).unwrap();
            format!("{head}{}", String::from_utf8_lossy(&req_body))
        });
        (url, h)
    }

    #[test]
    fn talks_to_a_loopback_endpoint() {
        let (url, server) = serve_once(fixture("openai-two-tool-calls.json"));
        let cfg =
            PlannerConfig { url, model: "test-model".into(), timeout: Duration::from_secs(10), allow_remote: false };
        let req = extract("open ~/Documents/report.pdf and then give me a terminal");
        let cands = vec![PlannerCandidate {
            app_id: "foot.desktop".into(),
            name: "Foot".into(),
            description: "Terminal".into(),
            score: 0.6,
        }];
        let body =
            request_body(&cfg.model, "open ~/Documents/report.pdf and then give me a terminal", &req.args, &cands);
        let resp = call(&cfg, &body).unwrap();
        let seen = server.join().unwrap();
        assert!(seen.starts_with("POST /v1/chat/completions HTTP/1.1"), "{seen}");
        assert!(seen.contains("\"launch_app\"") && seen.contains("foot.desktop") && seen.contains("test-model"));
        assert_eq!(parse_tool_calls(&resp).unwrap().len(), 2);
    }
}
