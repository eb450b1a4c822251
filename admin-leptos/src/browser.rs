//! The few browser facilities the UI uses, each behind a function that
//! cannot throw: a missing window, storage or clipboard gives a default or
//! an `Err` with a text to show.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The admin API's path when the page names none.
const DEFAULT_API_PATH: &str = "/api/admin";

/// The sessionStorage key holding the bearer token.
const TOKEN_KEY: &str = "madmail-admin-token";

/// The API path from `<meta name="madmail-api" content="...">`.
pub fn api_path() -> String {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.query_selector("meta[name='madmail-api']").ok().flatten())
        .and_then(|meta| meta.get_attribute("content"))
        .map(|path| path.trim().to_owned())
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| DEFAULT_API_PATH.to_owned())
}

fn session_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok().flatten()
}

pub fn stored_token() -> Option<String> {
    session_storage()?
        .get_item(TOKEN_KEY)
        .ok()
        .flatten()
        .filter(|token| !token.is_empty())
}

/// Keeps `token` for this tab's session, or forgets it. Without storage
/// (private modes may refuse it) the token lives only in memory.
pub fn store_token(token: Option<&str>) {
    if let Some(storage) = session_storage() {
        let _ = match token {
            Some(token) => storage.set_item(TOKEN_KEY, token),
            None => storage.remove_item(TOKEN_KEY),
        };
    }
}

pub fn location_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default()
}

/// `window.confirm`; no window means no.
pub fn confirm(question: &str) -> bool {
    web_sys::window()
        .and_then(|w| w.confirm_with_message(question).ok())
        .unwrap_or(false)
}

/// `window.prompt`; `None` when cancelled.
pub fn prompt(question: &str, default: &str) -> Option<String> {
    web_sys::window()?
        .prompt_with_message_and_default(question, default)
        .ok()
        .flatten()
}

/// Whether the tab is in the background, where live refreshes pause.
pub fn page_hidden() -> bool {
    web_sys::window()
        .and_then(|w| w.document())
        .is_some_and(|d| d.hidden())
}

/// Puts `text` on the clipboard. Browsers offer `navigator.clipboard` only
/// to secure pages (HTTPS or localhost) and may refuse it; then a selected
/// hidden textarea and the older copy command try again.
pub async fn copy(text: &str) -> Result<(), String> {
    let window = web_sys::window().ok_or("no window")?;
    let navigator = window.navigator();
    let clipboard = js_sys::Reflect::get(&navigator, &JsValue::from_str("clipboard"))
        .ok()
        .filter(|c| !c.is_undefined() && !c.is_null());
    let refused = match clipboard {
        Some(clipboard) => {
            let clipboard: web_sys::Clipboard = clipboard.unchecked_into();
            match JsFuture::from(clipboard.write_text(text)).await {
                Ok(_) => return Ok(()),
                Err(error) => describe(&error),
            }
        }
        None => "this page is not served over HTTPS".to_owned(),
    };
    if copy_by_selection(text) {
        Ok(())
    } else {
        Err(format!("copying failed ({refused}): select the text and copy it by hand"))
    }
}

/// The fallback of [`copy`]: `document.execCommand("copy")` on a hidden,
/// selected textarea. Whether it worked is all the browser tells.
fn copy_by_selection(text: &str) -> bool {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return false;
    };
    let (Some(body), Ok(area)) = (document.body(), document.create_element("textarea")) else {
        return false;
    };
    let Ok(area) = area.dyn_into::<web_sys::HtmlTextAreaElement>() else {
        return false;
    };
    area.set_value(text);
    let _ = area.set_attribute("readonly", "");
    let _ = area.set_attribute("style", "position:fixed;top:0;left:0;opacity:0");
    if body.append_child(&area).is_err() {
        return false;
    }
    area.select();
    let copied = document
        .dyn_ref::<web_sys::HtmlDocument>()
        .and_then(|d| d.exec_command("copy").ok())
        .unwrap_or(false);
    area.remove();
    copied
}

/// The local wall-clock time, `14:05:09`.
pub fn clock() -> String {
    let now = js_sys::Date::new_0();
    format!(
        "{:02}:{:02}:{:02}",
        now.get_hours(),
        now.get_minutes(),
        now.get_seconds()
    )
}

/// Unix seconds now.
pub fn now() -> i64 {
    (js_sys::Date::now() / 1000.0) as i64
}

/// A readable text for a thrown JavaScript value.
pub fn describe(error: &JsValue) -> String {
    if let Some(error) = error.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    error.as_string().unwrap_or_else(|| format!("{error:?}"))
}
