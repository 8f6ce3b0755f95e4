//! Durations as operators write them in configuration: `500ms`, `30s`, `15m`, `12h`, `7d`, or a
//! plain number of seconds. Zero is refused: every configured duration here must be positive.

use std::time::Duration;

pub fn parse(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (num, unit) = match raw.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration (e.g. 500ms, 30s, 15m, 12h, 7d)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(format!("{raw:?}: the unit must be ms, s, m, h or d")),
    };
    if d.is_zero() {
        return Err(format!("{raw:?}: the duration must be positive"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("900").unwrap(), Duration::from_secs(900));
        assert_eq!(parse(" 30s ").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(2_592_000));
        for bad in ["", "0", "0ms", "15x", "m", "ms", "-5", "1.5h"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
