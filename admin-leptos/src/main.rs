//! The madmail admin web UI.
//!
//! A client-side rendered Leptos app. The relay serves `index.html`, this
//! module compiled to `admin_bg.wasm`, and the glue `admin.js` from one
//! directory; the page reads the admin API's path from
//! `<meta name="madmail-api">`, which the relay may rewrite.
//!
//! Flow: [`app::App`] keeps the session (the bearer token, in
//! sessionStorage) and the screen (from the location hash). Every screen
//! talks to the relay only through [`api::Client`], which posts the admin
//! envelope (`{"method", "resource", "headers", "body"}`) and reports every
//! failure in the message area (`#message`).
//!
//! Invariants:
//! - No error is swallowed: a failed request always leaves its text in
//!   `#message`, and a 401 signs out and says why.
//! - Nothing is loaded without a bound: accounts come a page at a time.
//! - Elements a test drives carry stable `id` or `data-*` attributes, listed
//!   in `README.md`.

mod api;
mod app;
mod browser;
mod format;
mod qr;
mod route;
mod screens;
mod widgets;

fn main() {
    leptos::mount::mount_to_body(app::App);
}
