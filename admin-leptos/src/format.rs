//! Pure text formatting: sizes, dates and durations, and the size syntax
//! the quota prompt accepts. Sizes are binary (1 KiB = 1024 bytes), as the
//! relay counts them; dates are UTC, as the relay stores them.

const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

/// `0 B`, `512 B`, `1.5 KiB`, `12.3 MiB`, `500 MiB`.
pub fn bytes(n: u64) -> String {
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    let digits = if value < 100.0 { 1 } else { 0 };
    let text = format!("{value:.digits$}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// Reads `4096`, `500M`, `500 MiB`, `1.5g`, `2 GB`: a number and an
/// optional binary unit (none means bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write e.g. 500M or 2G"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?}: use K, M, G or T")),
    };
    Ok((number * factor as f64).round() as u64)
}

/// The shortest exact text [`parse_size`] reads back: `2G`, `500M`, `4096`.
pub fn size_input(n: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Year, month and day (UTC) of a Unix time; times before 1970 read as
/// 1970-01-01, which the relay never stores.
fn civil(seconds: i64) -> (i64, u32, u32) {
    let mut days = seconds.max(0) / 86_400;
    let mut year = 1970;
    loop {
        let length = if is_leap(year) { 366 } else { 365 };
        if days < length {
            break;
        }
        days -= length;
        year += 1;
    }
    let february = if is_leap(year) { 29 } else { 28 };
    let months = [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut month = 0;
    while days >= months[month] {
        days -= months[month];
        month += 1;
    }
    (year, month as u32 + 1, days as u32 + 1)
}

/// `2026-12-03`.
pub fn date(seconds: i64) -> String {
    let (year, month, day) = civil(seconds);
    format!("{year}-{month:02}-{day:02}")
}

/// `2026-12-03 14:05 UTC`.
pub fn date_time(seconds: i64) -> String {
    let of_day = seconds.max(0) % 86_400;
    format!(
        "{} {:02}:{:02} UTC",
        date(seconds),
        of_day / 3600,
        of_day % 3600 / 60
    )
}

/// `45 s`, `12 min`, `3 h 12 min`, `4 d 3 h`.
pub fn duration(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{minutes} min"),
        3600..86_400 if minutes == 0 => format!("{hours} h"),
        3600..86_400 => format!("{hours} h {minutes} min"),
        _ if hours == 0 => format!("{days} d"),
        _ => format!("{days} d {hours} h"),
    }
}

/// `just now`, `5 min ago`, `2 d 1 h ago`.
pub fn ago(then: i64, now: i64) -> String {
    match u64::try_from(now - then) {
        Ok(elapsed) if elapsed >= 60 => format!("{} ago", duration(elapsed)),
        _ => "just now".to_owned(),
    }
}

/// `1,234,567`: counts read at a glance.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units_and_drop_a_trailing_zero() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(524_288_000), "500 MiB");
        assert_eq!(bytes(4_554_752), "4.3 MiB");
        assert_eq!(bytes(52_521_566_208), "48.9 GiB");
    }

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("500M"), Ok(524_288_000));
        assert_eq!(parse_size(" 500 MiB "), Ok(524_288_000));
        assert_eq!(parse_size("1.5g"), Ok(1_610_612_736));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn size_input_reads_back_exactly() {
        for n in [0, 1, 4096, 524_288_000, 1 << 30, 3 << 40, 1_000_000] {
            assert_eq!(parse_size(&size_input(n)), Ok(n), "{n}");
        }
        assert_eq!(size_input(524_288_000), "500M");
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_796_256_000), "2026-12-03");
        assert_eq!(date_time(1_796_280_000), "2026-12-03 06:40 UTC");
    }

    #[test]
    fn durations_keep_two_units_at_most() {
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(3599), "59 min");
        assert_eq!(duration(3600 * 3 + 60 * 12), "3 h 12 min");
        assert_eq!(duration(86_400 * 4 + 3600 * 3 + 5), "4 d 3 h");
        assert_eq!(duration(86_400 * 3 + 59), "3 d");
        assert_eq!(duration(7200), "2 h");
        assert_eq!(ago(100, 110), "just now");
        assert_eq!(ago(0, 300), "5 min ago");
    }

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(100_000), "100,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
