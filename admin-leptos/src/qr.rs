//! QR codes as inline SVG, so invite links scan from the screen without
//! any image request.

use leptos::prelude::*;
use qrcode::{Color, QrCode};

/// Light modules around the symbol: ISO/IEC 18004 asks for four.
const QUIET_ZONE: usize = 4;

/// The dark modules of `text` as one SVG path in module units, and the
/// side of the whole image (quiet zone included). Each run of dark modules
/// in a row is one rectangle, which keeps the path short.
pub fn path(text: &str) -> Option<(usize, String)> {
    let code = QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let mut d = String::new();
    for (y, row) in colors.chunks(width).enumerate() {
        let mut x = 0;
        while x < width {
            if row[x] != Color::Dark {
                x += 1;
                continue;
            }
            let start = x;
            while x < width && row[x] == Color::Dark {
                x += 1;
            }
            let run = x - start;
            d.push_str(&format!(
                "M{} {}h{run}v1h-{run}z",
                start + QUIET_ZONE,
                y + QUIET_ZONE
            ));
        }
    }
    Some((width + 2 * QUIET_ZONE, d))
}

/// `text` as a QR code, 240 px wide on a white ground; `tag` becomes the
/// element's `data-qr`.
#[component]
pub fn Qr(text: String, tag: String) -> impl IntoView {
    match path(&text) {
        Some((side, d)) => {
            let view_box = format!("0 0 {side} {side}");
            view! {
                <svg
                    class="qr"
                    data-qr=tag
                    viewBox=view_box
                    width="240"
                    height="240"
                    role="img"
                    aria-label="QR code of the link"
                    shape-rendering="crispEdges"
                >
                    <rect width=side height=side fill="#fff" />
                    <path d=d fill="#000" />
                </svg>
            }
            .into_any()
        }
        None => view! { <p class="muted" data-qr=tag>"This link is too long for a QR code."</p> }
            .into_any(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_leaves_a_quiet_zone_of_four_modules() {
        let (side, d) = path("dcaccount:https://example.org/new?token=k3x0q8m2v7c1n5b9z4w6y2a8")
            .expect("a short link fits");
        let code = QrCode::new(b"dcaccount:https://example.org/new?token=k3x0q8m2v7c1n5b9z4w6y2a8")
            .expect("encodes");
        assert_eq!(side, code.width() + 8);
        // The top-left finder pattern starts at the quiet zone's edge.
        assert!(d.starts_with("M4 4h7v1h-7z"), "{d}");
    }
}
