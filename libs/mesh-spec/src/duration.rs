//! Durations as Kubernetes manifests write them: `500ms`, `30s`, `5m`, `2h`,
//! `1d`, or a bare number of seconds.

/// Milliseconds of a duration string; `None` when it is not one.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// The shortest exact form of `ms` (`90s` stays `90s`, `120000` is `2m`).
pub fn format_duration_ms(ms: u64) -> String {
    for (factor, unit) in [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ] {
        if ms != 0 && ms.is_multiple_of(factor) {
            return format!("{}{unit}", ms / factor);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("7", 7000),
        ] {
            assert_eq!(parse_duration_ms(text), Some(ms), "{text}");
        }
        for bad in ["", "s", "1.5s", "-1s", "10 weeks", "99999999999999999999s"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
        assert_eq!(format_duration_ms(120_000), "2m");
        assert_eq!(format_duration_ms(1500), "1500ms");
        assert_eq!(parse_duration_ms(&format_duration_ms(90_000)), Some(90_000));
    }
}
