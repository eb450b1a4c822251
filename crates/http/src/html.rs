//! HTML helpers for the web pages: escaping and the shared page frame.
//!
//! Invariant: every value interpolated into markup goes through [`escape`];
//! the frame itself is constant apart from the escaped title and the
//! already-built body.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

/// Inline style: readable on a phone, no external resources.
const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
margin:0 auto;max-width:40rem;padding:1rem 1.25rem;line-height:1.5;color:#222;background:#fff}\
h1{font-size:1.6rem;margin:.5rem 0 1rem}h2{font-size:1.2rem;margin-top:1.5rem}\
a{color:#0b63b6}nav{margin-bottom:1rem}nav a{margin-right:1rem}\
.qr{display:block;width:100%;max-width:18rem;height:auto;margin:1rem auto;border:1px solid #ddd}\
.button{display:block;text-align:center;background:#0b63b6;color:#fff;padding:.8rem 1rem;\
border-radius:.5rem;text-decoration:none;font-weight:600;margin:1rem 0}\
dl{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:.4rem 1rem}dt{font-weight:600}dd{margin:0}\
.note{color:#555;font-size:.9rem}code{overflow-wrap:anywhere}footer{margin-top:2rem;font-size:.85rem;color:#666}\
@media (prefers-color-scheme:dark){body{background:#111;color:#ddd}a{color:#6ab0f3}\
.note,footer{color:#aaa}}";

/// Escapes text for use in element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A complete page: `title` is escaped, `body` is trusted markup built
/// with [`escape`].
pub fn page(title: &str, body: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"/\">Home</a><a href=\"/info\">Info</a><a href=\"/privacy\">Privacy</a></nav>\
         {body}<footer>A chatmail relay for Delta Chat.</footer></body></html>\n"
    )
}

/// A page response that no cache keeps (it may carry fresh credentials).
pub fn private_page(html: String) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn page_escapes_its_title_and_sets_a_viewport() {
        let html = page("<b>", "<p>ok</p>");
        assert!(html.contains("<title>&lt;b&gt;</title>"));
        assert!(html.contains("name=\"viewport\""));
        assert!(html.contains("<p>ok</p>"));
        assert!(!html.contains("<script"));
    }
}
