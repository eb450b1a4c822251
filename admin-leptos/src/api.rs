//! The admin API envelope, posted with `fetch`.
//!
//! Every call is `POST <api path>` with `{"method", "resource", "headers",
//! "body"}`; the relay always answers HTTP 200 and puts the real status in
//! the reply envelope. [`Client::send`] turns that into a `Result`;
//! [`Client::call`] and [`Client::run`] also keep the busy count and report
//! failures in the message area, so a screen only handles success.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::browser;

/// The envelope's `method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// A request that did not succeed: the envelope's status and error text,
/// or status 0 when no envelope came back at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    fn transport(message: impl Into<String>) -> Self {
        ApiError {
            status: 0,
            message: message.into(),
        }
    }
}

/// What the message area shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    Error,
    Done,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Error => "error",
            NoticeKind::Done => "done",
        }
    }
}

/// The reply envelope; only `status`, `body` and `error` matter here.
#[derive(Deserialize)]
struct Reply {
    status: u16,
    #[serde(default)]
    body: Value,
    #[serde(default)]
    error: Option<String>,
}

/// The session's handle on the API. It is `Copy` (signals only), so every
/// event handler can capture it.
#[derive(Clone, Copy)]
pub struct Client {
    /// Where envelopes are posted, from `<meta name="madmail-api">`.
    path: StoredValue<String>,
    /// The bearer token; `None` while signed out.
    token: RwSignal<Option<String>>,
    /// The message area (`#message`).
    notice: RwSignal<Option<Notice>>,
    /// Requests in flight that the user started, for the busy state.
    pending: RwSignal<u32>,
}

impl Client {
    pub fn new(path: String, token: Option<String>) -> Self {
        Client {
            path: StoredValue::new(path),
            token: RwSignal::new(token),
            notice: RwSignal::new(None),
            pending: RwSignal::new(0),
        }
    }

    /// The client the app provided as context.
    pub fn get() -> Self {
        expect_context::<Client>()
    }

    pub fn signed_in(self) -> bool {
        self.token.with(Option::is_some)
    }

    /// Whether a request the user started is still running.
    pub fn busy(self) -> bool {
        self.pending.get() > 0
    }

    pub fn notice(self) -> Option<Notice> {
        self.notice.get()
    }

    pub fn sign_in(self, token: String) {
        browser::store_token(Some(&token));
        self.token.set(Some(token));
        self.notice.set(None);
    }

    /// Forgets the token; `why`, when given, is shown as an error.
    pub fn sign_out(self, why: Option<&str>) {
        browser::store_token(None);
        self.token.set(None);
        self.notice.set(why.map(|text| Notice {
            kind: NoticeKind::Error,
            text: text.to_owned(),
        }));
    }

    pub fn done(self, text: impl Into<String>) {
        self.notice.set(Some(Notice {
            kind: NoticeKind::Done,
            text: text.into(),
        }));
    }

    pub fn error(self, text: impl Into<String>) {
        self.notice.set(Some(Notice {
            kind: NoticeKind::Error,
            text: text.into(),
        }));
    }

    pub fn dismiss(self) {
        self.notice.set(None);
    }

    /// Shows a failed request; a rejected token also ends the session.
    pub fn report(self, resource: &str, error: ApiError) {
        match error.status {
            401 => self.sign_out(Some("The relay did not accept the token: sign in again.")),
            0 => self.error(error.message),
            status => self.error(format!("{resource}: {} ({status})", error.message)),
        }
    }

    /// One request with this session's token, counted as busy; failures are
    /// reported and give `None`.
    pub async fn call<T: DeserializeOwned>(
        self,
        method: Method,
        resource: &str,
        body: Value,
    ) -> Option<T> {
        self.pending.update(|n| *n += 1);
        let reply = self.request(method, resource, body).await;
        self.pending.update(|n| *n = n.saturating_sub(1));
        self.settle(resource, reply)
    }

    /// Like [`Client::call`], but not counted as busy: for refreshes the
    /// user did not ask for.
    pub async fn poll<T: DeserializeOwned>(self, resource: &str) -> Option<T> {
        let reply = self.request(Method::Get, resource, Value::Null).await;
        self.settle(resource, reply)
    }

    /// Starts [`Client::call`] and hands a successful reply to `done`.
    pub fn run<T, F>(self, method: Method, resource: impl Into<String>, body: Value, done: F)
    where
        T: DeserializeOwned + 'static,
        F: FnOnce(T) + 'static,
    {
        let resource = resource.into();
        spawn_local(async move {
            if let Some(reply) = self.call(method, &resource, body).await {
                done(reply);
            }
        });
    }

    async fn request(self, method: Method, resource: &str, body: Value) -> Result<Value, ApiError> {
        let Some(token) = self.token.get_untracked() else {
            return Err(ApiError {
                status: 401,
                message: "signed out".into(),
            });
        };
        self.send(&token, method, resource, body).await
    }

    fn settle<T: DeserializeOwned>(
        self,
        resource: &str,
        reply: Result<Value, ApiError>,
    ) -> Option<T> {
        let body = reply.map_err(|error| self.report(resource, error)).ok()?;
        serde_json::from_value(body)
            .map_err(|error| self.error(format!("{resource}: unexpected reply ({error})")))
            .ok()
    }

    /// Posts one envelope with `token` and returns the reply's body when its
    /// status is 200 or 201.
    pub async fn send(
        self,
        token: &str,
        method: Method,
        resource: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let envelope = json!({
            "method": method.as_str(),
            "resource": resource,
            "headers": {"Authorization": format!("Bearer {token}")},
            "body": body,
        });
        let text = post(&self.path.get_value(), &envelope.to_string()).await?;
        let reply: Reply = serde_json::from_str(&text)
            .map_err(|error| ApiError::transport(format!("the relay's reply is not an envelope: {error}")))?;
        match reply.status {
            200 | 201 => Ok(reply.body),
            status => Err(ApiError {
                status,
                message: reply.error.unwrap_or_else(|| format!("status {status}")),
            }),
        }
    }
}

/// `fetch(path, {method: "POST", body})`, giving the response text of an
/// HTTP 200.
async fn post(path: &str, body: &str) -> Result<String, ApiError> {
    let failed = |what: &str, error: JsValue| {
        ApiError::transport(format!("{what}: {}", browser::describe(&error)))
    };
    let window = web_sys::window().ok_or_else(|| ApiError::transport("no window"))?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(body));
    let request = web_sys::Request::new_with_str_and_init(path, &init)
        .map_err(|e| failed("cannot build the request", e))?;
    request
        .headers()
        .set("Content-Type", "application/json")
        .map_err(|e| failed("cannot build the request", e))?;
    let response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(|e| failed("the relay cannot be reached", e))?;
    let response: web_sys::Response = response
        .dyn_into()
        .map_err(|e| failed("fetch gave no response", e))?;
    if response.status() != 200 {
        return Err(ApiError::transport(format!(
            "{path} answered HTTP {} (is the admin API enabled?)",
            response.status()
        )));
    }
    let text = response.text().map_err(|e| failed("cannot read the reply", e))?;
    let text = JsFuture::from(text)
        .await
        .map_err(|e| failed("cannot read the reply", e))?;
    text.as_string()
        .ok_or_else(|| ApiError::transport("the reply is not text"))
}
