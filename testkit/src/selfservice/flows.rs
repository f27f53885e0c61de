//! Login and registration flows: creation, the flow JSON, submissions (password; OIDC is started
//! in [`super::social`]) and the answers that end a flow with a session.

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use hyper::Response;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::wire::{
    add_cookie, body_fields, cookie, create_session, csrf_cookie, error_response, error_with,
    json_response, new_cookie_value, new_csrf_value, new_token, redirect, session_cookie,
    stored_session, user_agent, wants_json, Who,
};
use super::{not_found, social, Account, Exchange, Flow, FlowKind, FlowType};
use crate::kratos::{rfc3339, State};
use crate::server::{lock, Body};

/// One `input` node of a flow's UI.
struct Input<'a> {
    group: &'a str,
    name: &'a str,
    ty: &'a str,
    value: Option<&'a str>,
    required: bool,
    autocomplete: Option<&'a str>,
    label: Option<Value>,
}

impl<'a> Input<'a> {
    fn new(group: &'a str, name: &'a str, ty: &'a str) -> Self {
        Input {
            group,
            name,
            ty,
            value: None,
            required: ty != "submit",
            autocomplete: None,
            label: None,
        }
    }

    fn value(mut self, v: &'a str) -> Self {
        self.value = Some(v);
        self
    }

    fn optional(mut self) -> Self {
        self.required = false;
        self
    }

    fn autocomplete(mut self, v: &'a str) -> Self {
        self.autocomplete = Some(v);
        self
    }

    /// `meta.label` (`context` only when given).
    fn label(mut self, id: u32, text: &str, context: Option<Value>) -> Self {
        let mut l = json!({ "id": id, "text": text, "type": "info" });
        if let Some(c) = context {
            l["context"] = c;
        }
        self.label = Some(l);
        self
    }

    fn json(self) -> Value {
        let mut attrs = json!({ "name": self.name, "type": self.ty });
        if let Some(v) = self.value {
            attrs["value"] = json!(v);
        }
        if self.required {
            attrs["required"] = json!(true);
        }
        if let Some(a) = self.autocomplete {
            attrs["autocomplete"] = json!(a);
        }
        attrs["disabled"] = json!(false);
        attrs["node_type"] = json!("input");
        let meta = match self.label {
            Some(l) => json!({ "label": l }),
            None => json!({}),
        };
        json!({ "type": "input", "group": self.group, "attributes": attrs, "messages": [], "meta": meta })
    }
}

/// The flow as Kratos serves it. `with_exchange_code`: the answer that creates an API flow is
/// the only one carrying `session_token_exchange_code`.
pub(super) fn flow_json(state: &State, flow: &Flow, with_exchange_code: bool) -> Value {
    let ss = lock(&state.selfservice);
    let login = flow.kind == FlowKind::Login;
    let csrf = if flow.ty == FlowType::Browser {
        flow.csrf.as_str()
    } else {
        ""
    };
    let email_label = || Some(json!({ "title": "E-Mail" }));
    let mut providers: Vec<&String> = ss.providers.keys().collect();
    providers.sort();
    let mut nodes: Vec<Value> = providers
        .into_iter()
        .map(|p| {
            let (id, verb) = if login {
                (1_010_002, "Sign in")
            } else {
                (1_040_002, "Sign up")
            };
            let context = json!({ "provider": p, "provider_id": p });
            Input::new("oidc", "provider", "submit")
                .value(p)
                .label(id, &format!("{verb} with {p}"), Some(context))
                .json()
        })
        .collect();
    nodes.push(
        Input::new("default", "csrf_token", "hidden")
            .value(csrf)
            .json(),
    );
    if login {
        nodes.push(
            Input::new("default", "identifier", "text")
                .value(flow.identifier.as_deref().unwrap_or_default())
                .label(1_070_002, "E-Mail", email_label())
                .json(),
        );
        nodes.push(
            Input::new("password", "password", "password")
                .autocomplete("current-password")
                .label(1_070_001, "Password", None)
                .json(),
        );
    } else {
        nodes.push(
            Input::new("password", "traits.email", "email")
                .autocomplete("email")
                .label(1_070_002, "E-Mail", email_label())
                .json(),
        );
        nodes.push(
            Input::new("password", "password", "password")
                .autocomplete("new-password")
                .label(1_070_001, "Password", None)
                .json(),
        );
        for name in ["traits.name.first", "traits.name.last"] {
            nodes.push(Input::new("password", name, "text").optional().json());
        }
    }
    let (id, text) = if login {
        (1_010_022, "Sign in with password")
    } else {
        (1_040_001, "Sign up")
    };
    nodes.push(
        Input::new("password", "method", "submit")
            .value("password")
            .label(id, text, None)
            .json(),
    );
    let lifespan = if login { 600 } else { 3600 };
    let mut ui = json!({
        "action": format!("{}/self-service/{}?flow={}", state.url, flow.kind.name(), flow.id),
        "method": "POST",
        "nodes": nodes,
    });
    if let Some(e) = &flow.error {
        ui["messages"] = json!([{ "id": e.0, "text": e.1, "type": "error" }]);
    }
    let mut v = json!({
        "id": flow.id,
        "organization_id": null,
        "type": if flow.ty == FlowType::Browser { "browser" } else { "api" },
        "expires_at": rfc3339(flow.issued_at + Duration::from_secs(lifespan)),
        "issued_at": rfc3339(flow.issued_at),
        "request_url": flow.request_url,
        "ui": ui,
        "state": "choose_method",
    });
    if let Some(r) = &flow.return_to {
        v["return_to"] = json!(r);
    }
    if login {
        v["created_at"] = json!(rfc3339(flow.issued_at));
        v["updated_at"] = json!(rfc3339(flow.issued_at));
        v["refresh"] = json!(false);
        v["requested_aal"] = json!("aal1");
    }
    match &flow.init_code {
        Some(code) if with_exchange_code => v["session_token_exchange_code"] = json!(code),
        _ => {}
    }
    v
}

pub(super) fn init_flow(
    state: &State,
    kind: FlowKind,
    ty: FlowType,
    h: &HeaderMap,
    query: &HashMap<String, String>,
    path_and_query: &str,
) -> Response<Body> {
    let json = ty == FlowType::Api || wants_json(h);
    if ty == FlowType::Browser && query.get("refresh").map(String::as_str) != Some("true") {
        let name = lock(&state.cookie_name).clone();
        let has_session = cookie(h, &name).is_some_and(|c| stored_session(state, &c).is_some());
        if has_session {
            if json {
                return error_response(
                    400,
                    Some("session_already_available"),
                    Some("A valid session was detected and thus login is not possible. Did you forget to set `?refresh=true`?"),
                    "you are already logged in",
                );
            }
            let ret = query
                .get("return_to")
                .cloned()
                .unwrap_or_else(|| lock(&state.selfservice).default_return_url.clone());
            return redirect(&ret);
        }
    }
    let mut ss = lock(&state.selfservice);
    let init_code = (ty == FlowType::Api
        && query
            .get("return_session_token_exchange_code")
            .map(String::as_str)
            == Some("true"))
    .then(|| uuid::Uuid::new_v4().simple().to_string());
    if let Some(code) = &init_code {
        ss.exchanges.insert(
            code.clone(),
            Exchange {
                return_to_code: uuid::Uuid::new_v4().simple().to_string(),
                token: None,
            },
        );
    }
    // A browser keeps its csrf cookie: the flows it starts share the token; a browser without one
    // gets a new cookie.
    let existing_csrf = cookie(h, &ss.csrf_cookie_name).filter(|c| !c.is_empty());
    let new_csrf = (ty == FlowType::Browser && existing_csrf.is_none()).then(new_csrf_value);
    let flow = Flow {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        ty,
        csrf: existing_csrf
            .or_else(|| new_csrf.clone())
            .unwrap_or_default(),
        return_to: query.get("return_to").cloned().filter(|r| !r.is_empty()),
        request_url: format!("{}{}", state.url, path_and_query),
        issued_at: OffsetDateTime::now_utc(),
        init_code,
        error: None,
        identifier: None,
    };
    ss.flows.insert(flow.id.clone(), flow.clone());
    let set_csrf = new_csrf.map(|v| csrf_cookie(&ss, &v));
    let ui = format!("{}/{}?flow={}", ss.ui_base, kind.name(), flow.id);
    drop(ss);
    let mut resp = if json {
        json_response(StatusCode::OK, &flow_json(state, &flow, true))
    } else {
        redirect(&ui)
    };
    if let Some(c) = set_csrf {
        add_cookie(&mut resp, &c);
    }
    resp
}

pub(super) fn submit(
    state: &State,
    kind: FlowKind,
    h: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response<Body> {
    let Some(flow) = query
        .get("flow")
        .and_then(|id| lock(&state.selfservice).flows.get(id).cloned())
        .filter(|f| f.kind == kind)
    else {
        return not_found();
    };
    let fields = body_fields(h, body);
    let json = flow.ty == FlowType::Api || wants_json(h);
    if flow.ty == FlowType::Browser {
        let cookie_name = lock(&state.selfservice).csrf_cookie_name.clone();
        let ok = fields.get("csrf_token") == Some(&flow.csrf)
            && cookie(h, &cookie_name).as_deref() == Some(flow.csrf.as_str());
        if !ok {
            return error_with(403, Some("security_csrf_violation"), Some("Please retry the flow and optionally clear your cookies. The request was rejected to protect you from Cross-Site-Request-Forgery (CSRF) which could cause account takeover, leaking personal information, and other serious security issues."), "the request was rejected to protect you from Cross-Site-Request-Forgery", |b| {
                b["error"]["details"] = json!({
                    "docs": "https://www.ory.sh/kratos/docs/debug/csrf",
                    "hint": "The anti-CSRF cookie was found but the CSRF token was not included in the HTTP request body (csrf_token) nor in the HTTP Header (X-CSRF-Token).",
                    "reject_reason": "The HTTP Cookie Header was set and a CSRF token was sent but they do not match. We recommend deleting all cookies for this domain and retrying the flow.",
                });
            });
        }
    }
    match fields.get("method").map(String::as_str) {
        Some("password") => password(state, flow, &fields, json, h),
        Some("oidc") => social::start_oidc(state, flow, &fields, json),
        _ => fail_flow(
            state,
            flow,
            (
                4_010_001,
                "Could not find a strategy to handle the request.",
            ),
            json,
        ),
    }
}

/// Validation failure: 400 + the flow with the message in `ui.messages` (JSON) or 303 back to
/// the UI (browser form).
pub(super) fn fail_flow(
    state: &State,
    mut flow: Flow,
    msg: (u32, &str),
    json: bool,
) -> Response<Body> {
    flow.error = Some((msg.0, msg.1.to_owned()));
    let mut ss = lock(&state.selfservice);
    ss.flows.insert(flow.id.clone(), flow.clone());
    let ui = format!("{}/{}?flow={}", ss.ui_base, flow.kind.name(), flow.id);
    drop(ss);
    if json {
        json_response(StatusCode::BAD_REQUEST, &flow_json(state, &flow, false))
    } else {
        redirect(&ui)
    }
}

fn password(
    state: &State,
    mut flow: Flow,
    fields: &HashMap<String, String>,
    json: bool,
    h: &HeaderMap,
) -> Response<Body> {
    let pw = fields.get("password").cloned().unwrap_or_default();
    let (identifier, identity_id, verified) = match flow.kind {
        FlowKind::Login => {
            let id = fields.get("identifier").cloned().unwrap_or_default();
            let acct = lock(&state.selfservice).accounts.get(&id).cloned();
            match acct {
                Some(a) if !pw.is_empty() && a.password == pw => (id, a.identity_id, a.verified),
                _ => {
                    flow.identifier = Some(id);
                    return fail_flow(state, flow, (4_000_006, "The provided credentials are invalid, check for spelling mistakes in your password or username, email address, or phone number."), json);
                }
            }
        }
        FlowKind::Registration => {
            let email = fields.get("traits.email").cloned().unwrap_or_default();
            if email.is_empty() || pw.is_empty() {
                return fail_flow(state, flow, (4_000_002, "Property email is missing."), json);
            }
            let mut ss = lock(&state.selfservice);
            if ss.accounts.contains_key(&email) {
                drop(ss);
                return fail_flow(state, flow, (4_000_007, "An account with the same identifier (email, phone, username, ...) exists already."), json);
            }
            let identity_id = uuid::Uuid::new_v4().to_string();
            ss.accounts.insert(
                email.clone(),
                Account {
                    password: pw,
                    identity_id: identity_id.clone(),
                    verified: false,
                },
            );
            (email, identity_id, false)
        }
    };
    let who = Who {
        identity_id: &identity_id,
        email: &identifier,
        verified,
    };
    finish_login(state, &flow, &who, json, h)
}

/// The session exists: answer like Kratos does at the end of a successful flow.
pub(super) fn finish_login(
    state: &State,
    flow: &Flow,
    who: &Who<'_>,
    json: bool,
    h: &HeaderMap,
) -> Response<Body> {
    lock(&state.selfservice).flows.remove(&flow.id);
    let registration = flow.kind == FlowKind::Registration;
    match flow.ty {
        FlowType::Api => {
            let token = new_token();
            let session = create_session(state, &token, who, user_agent(h));
            let mut body = json!({ "session_token": token, "session": session });
            if registration {
                body["identity"] = body["session"]["identity"].clone();
                body["continue_with"] = json!([
                    { "action": "set_ory_session_token", "ory_session_token": token },
                ]);
            } else {
                body["continue_with"] = Value::Null;
            }
            json_response(StatusCode::OK, &body)
        }
        FlowType::Browser => {
            let value = new_cookie_value();
            let session = create_session(state, &value, who, user_agent(h));
            let name = lock(&state.cookie_name).clone();
            let ss = lock(&state.selfservice);
            // Kratos renews the csrf cookie whenever the session changes.
            let csrf = csrf_cookie(&ss, &new_csrf_value());
            let set = session_cookie(&ss, &name, &value);
            let ret = flow
                .return_to
                .clone()
                .unwrap_or_else(|| ss.default_return_url.clone());
            drop(ss);
            let mut resp = if json {
                let mut body = json!({
                    "session": session,
                    "continue_with": [{ "action": "redirect_browser_to", "redirect_browser_to": ret }],
                });
                if registration {
                    body["identity"] = body["session"]["identity"].clone();
                }
                json_response(StatusCode::OK, &body)
            } else {
                redirect(&ret)
            };
            add_cookie(&mut resp, &csrf);
            add_cookie(&mut resp, &set);
            resp
        }
    }
}
