//! Social sign-in (OIDC) in the double's flows and the native apps' session token exchange.

use std::collections::HashMap;

use http::{HeaderMap, StatusCode};
use hyper::Response;
use serde_json::{json, Value};

use super::flows::{fail_flow, finish_login};
use super::wire::{
    add_cookie, clear_cookie, cookie, create_session, enc, error_redirect, error_response,
    error_with, http_call, json_response, lasting_cookie, new_token, redirect, session_value,
    stored_session, user_agent, Who,
};
use super::{Flow, FlowType, PendingOidc, CALLBACK_PATH, CONTINUITY_COOKIE};
use crate::kratos::State;
use crate::server::{lock, Body};

pub(super) fn start_oidc(
    state: &State,
    flow: Flow,
    fields: &HashMap<String, String>,
    json: bool,
) -> Response<Body> {
    let provider_id = fields.get("provider").cloned().unwrap_or_default();
    let mut ss = lock(&state.selfservice);
    let Some(provider) = ss.providers.get(&provider_id).cloned() else {
        drop(ss);
        return fail_flow(
            state,
            flow,
            (4_000_001, "Unable to find the OpenID Connect provider."),
            json,
        );
    };
    let base = ss
        .base_redirect_uri
        .clone()
        .unwrap_or_else(|| state.url.clone());
    let redirect_uri = format!("{base}{CALLBACK_PATH}{provider_id}");
    let st = uuid::Uuid::new_v4().simple().to_string();
    let continuity =
        (flow.ty == FlowType::Browser).then(|| uuid::Uuid::new_v4().simple().to_string());
    ss.pending.insert(
        st.clone(),
        PendingOidc {
            flow_id: flow.id.clone(),
            provider: provider_id,
            redirect_uri: redirect_uri.clone(),
            continuity: continuity.clone(),
        },
    );
    let authorize = format!(
        "{}?client_id={}&redirect_uri={}&response_type=code&scope=openid+email+profile&state={}",
        provider.authorize_url,
        enc(&provider.client_id),
        enc(&redirect_uri),
        st
    );
    let continuity_cookie = continuity.map(|c| lasting_cookie(&ss, CONTINUITY_COOKIE, &c, 600));
    drop(ss);
    let mut resp = if json {
        error_with(
            422,
            Some("browser_location_change_required"),
            Some(&format!(
                "In order to complete this flow please redirect the browser to: {authorize}"
            )),
            "browser location change required",
            |b| b["redirect_browser_to"] = json!(authorize),
        )
    } else {
        redirect(&authorize)
    };
    if let Some(c) = continuity_cookie {
        add_cookie(&mut resp, &c);
    }
    resp
}

pub(super) async fn oidc_callback(
    state: &State,
    provider_id: &str,
    h: &HeaderMap,
    params: &HashMap<String, String>,
) -> Response<Body> {
    let pending = params
        .get("state")
        .and_then(|s| lock(&state.selfservice).pending.remove(s));
    let Some(pending) = pending else {
        return error_redirect(state, "oidc callback: unknown or reused state".into());
    };
    if pending.provider != provider_id {
        return error_redirect(
            state,
            "oidc callback: state belongs to another provider".into(),
        );
    }
    let (flow, provider) = {
        let ss = lock(&state.selfservice);
        (
            ss.flows.get(&pending.flow_id).cloned(),
            ss.providers.get(provider_id).cloned(),
        )
    };
    let (Some(flow), Some(provider)) = (flow, provider) else {
        return error_redirect(state, "oidc callback: flow or provider gone".into());
    };
    if let Some(expected) = &pending.continuity {
        if cookie(h, CONTINUITY_COOKIE).as_deref() != Some(expected.as_str()) {
            return error_redirect(
                state,
                "oidc callback: continuity cookie missing or wrong".into(),
            );
        }
    }
    let Some(code) = params.get("code") else {
        return error_redirect(state, "oidc callback: no code".into());
    };
    // The token request repeats the redirect_uri given to /authorize, byte for byte.
    let form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&client_secret=secret",
        enc(code),
        enc(&pending.redirect_uri),
        enc(&provider.client_id)
    );
    let token = match http_call(
        "POST",
        &provider.token_url,
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .await
    {
        Ok((200, body)) => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_owned)),
        Ok((status, body)) => {
            return error_redirect(
                state,
                format!(
                    "oidc token request: {status} {}",
                    String::from_utf8_lossy(&body)
                ),
            )
        }
        Err(e) => return error_redirect(state, format!("oidc token request: {e}")),
    };
    let Some(token) = token else {
        return error_redirect(state, "oidc token response without access_token".into());
    };
    let auth = format!("Bearer {token}");
    let info = match http_call(
        "GET",
        &provider.userinfo_url,
        &[("authorization", &auth)],
        b"",
    )
    .await
    {
        Ok((200, body)) => serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        Ok((status, _)) => return error_redirect(state, format!("oidc userinfo: {status}")),
        Err(e) => return error_redirect(state, format!("oidc userinfo: {e}")),
    };
    let (Some(sub), email) = (
        info["sub"].as_str().map(str::to_owned),
        info["email"]
            .as_str()
            .unwrap_or("social@example.com")
            .to_owned(),
    ) else {
        return error_redirect(state, "oidc userinfo without sub".into());
    };
    let (identity_id, email) = lock(&state.selfservice)
        .social
        .entry((provider_id.to_owned(), sub))
        .or_insert_with(|| (uuid::Uuid::new_v4().to_string(), email))
        .clone();

    match flow.ty {
        FlowType::Browser => {
            let who = Who {
                identity_id: &identity_id,
                email: &email,
                verified: true,
            };
            let mut resp = finish_login(state, &flow, &who, false, h);
            let ss = lock(&state.selfservice);
            add_cookie(&mut resp, &clear_cookie(&ss, CONTINUITY_COOKIE));
            resp
        }
        FlowType::Api => {
            let session_token = new_token();
            let who = Who {
                identity_id: &identity_id,
                email: &email,
                verified: true,
            };
            create_session(state, &session_token, &who, user_agent(h));
            let mut ss = lock(&state.selfservice);
            ss.flows.remove(&flow.id);
            let ret = flow
                .return_to
                .clone()
                .unwrap_or_else(|| ss.default_return_url.clone());
            let exchange = flow
                .init_code
                .as_ref()
                .and_then(|c| ss.exchanges.get_mut(c));
            match exchange {
                Some(x) => {
                    x.token = Some(session_token);
                    let sep = if ret.contains('?') { '&' } else { '?' };
                    redirect(&format!("{ret}{sep}code={}", x.return_to_code))
                }
                None => redirect(&ret),
            }
        }
    }
}

pub(super) fn token_exchange(state: &State, query: &HashMap<String, String>) -> Response<Body> {
    let given = |k: &str| query.get(k).filter(|v| !v.is_empty());
    let (Some(init), Some(rtc)) = (given("init_code"), given("return_to_code")) else {
        return error_response(
            400,
            None,
            Some(r#""init_code" and "return_to_code" query params must be set"#),
            "The request was malformed or contained invalid parameters",
        );
    };
    let token = {
        let mut ss = lock(&state.selfservice);
        match ss.exchanges.get(init) {
            Some(x) if &x.return_to_code == rtc && x.token.is_some() => {
                ss.exchanges.remove(init).and_then(|x| x.token)
            }
            _ => None,
        }
    };
    let session = token.and_then(|t| stored_session(state, &t).map(|s| (t, s)));
    match session {
        Some((token, s)) => json_response(
            StatusCode::OK,
            &json!({ "session_token": token, "session": session_value(&s) }),
        ),
        None => error_response(
            404,
            None,
            Some(r#"no session yet for this "code""#),
            "The requested resource could not be found",
        ),
    }
}
