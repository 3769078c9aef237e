//! Durations as people write them, for every binary's flags and config files: `500ms`, `30s`,
//! `1.5s`, `5m`, `24h`, `7d`; a number alone is seconds (`30`, `0.25`), as the older flags took.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A [`Duration`] read from and shown as text (`30s`, `500ms`). Serialised as that text; read from
/// text or from a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(s))
    }

    pub const fn millis(ms: u64) -> HumanDuration {
        HumanDuration(Duration::from_millis(ms))
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> HumanDuration {
        HumanDuration(d)
    }
}

const UNITS: [(&str, f64); 5] = [
    ("ms", 0.001),
    ("s", 1.0),
    ("m", 60.0),
    ("h", 3_600.0),
    ("d", 86_400.0),
];

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<HumanDuration, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        if number.is_empty() {
            return Err(format!(
                "{text:?} is not a duration: write a number and a unit, like 500ms, 30s, 5m, 24h or 7d"
            ));
        }
        let n: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration: {number:?} is not a number"))?;
        let scale = match unit.trim() {
            "" => 1.0,
            u => UNITS
                .iter()
                .find(|(name, _)| *name == u)
                .map(|(_, scale)| *scale)
                .ok_or_else(|| {
                    format!("{text:?} is not a duration: unknown unit {u:?} (use ms, s, m, h or d)")
                })?,
        };
        Duration::try_from_secs_f64(n * scale)
            .map(HumanDuration)
            .map_err(|_| format!("{text:?} is too long a duration"))
    }
}

impl fmt::Display for HumanDuration {
    /// The largest unit that shows it exactly: `30s`, `5m`, `24h`, `7d`, `1500ms`; and `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !self.0.subsec_nanos().is_multiple_of(1_000_000) {
            return write!(f, "{}s", self.0.as_secs_f64());
        }
        if ms == 0 {
            return write!(f, "0s");
        }
        for (unit, per) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms.is_multiple_of(per) {
                return write!(f, "{}{unit}", ms / per);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Text {
            Text(String),
            Seconds(f64),
        }
        match Text::deserialize(d)? {
            Text::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Text::Seconds(s) => Duration::try_from_secs_f64(s)
                .map(HumanDuration)
                .map_err(|_| serde::de::Error::custom(format!("{s} is not a duration in seconds"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn d(text: &str) -> Duration {
        text.parse::<HumanDuration>().unwrap().0
    }

    #[test]
    fn people_write_durations_with_units() {
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("24h"), Duration::from_secs(86_400));
        assert_eq!(d("7d"), Duration::from_secs(7 * 86_400));
        // A number alone is seconds, as the older flags took.
        assert_eq!(d("30"), Duration::from_secs(30));
        assert_eq!(d("0.25"), Duration::from_millis(250));
        assert_eq!(d(" 2s "), Duration::from_secs(2));
    }

    #[test]
    fn what_is_wrong_is_named() {
        let err = |t: &str| t.parse::<HumanDuration>().unwrap_err();
        assert!(
            err("5 weeks").contains("unknown unit \"weeks\""),
            "{}",
            err("5 weeks")
        );
        assert!(err("ms").contains("write a number and a unit"));
        assert!(err("").contains("write a number and a unit"));
        assert!(err("1.2.3s").contains("not a number"));
        assert!(err("-5s").contains("write a number"));
        assert!(err("99999999999999999999d").contains("too long"));
    }

    #[test]
    fn shown_in_the_largest_exact_unit_and_read_back() {
        for (text, shown) in [
            ("30s", "30s"),
            ("90s", "90s"),
            ("120s", "2m"),
            ("1500ms", "1500ms"),
            ("0", "0s"),
            ("7d", "7d"),
            ("36h", "36h"),
        ] {
            let h: HumanDuration = text.parse().unwrap();
            assert_eq!(h.to_string(), shown);
            assert_eq!(h.to_string().parse::<HumanDuration>().unwrap(), h);
        }
        // Finer than a millisecond: seconds with a fraction.
        let fine = HumanDuration(Duration::from_nanos(1_500_000_100));
        let back: HumanDuration = fine.to_string().parse().unwrap();
        assert!(fine.to_string().ends_with('s'));
        assert!(back.0.abs_diff(fine.0) < Duration::from_micros(1), "{fine}");
    }

    #[test]
    fn config_files_may_give_text_or_seconds() {
        let from = |json: &str| serde_json::from_str::<HumanDuration>(json);
        assert_eq!(from("\"250ms\"").unwrap(), HumanDuration::millis(250));
        assert_eq!(from("30").unwrap(), HumanDuration::secs(30));
        assert_eq!(from("0.5").unwrap(), HumanDuration::millis(500));
        assert!(from("\"soon\"").unwrap_err().to_string().contains("soon"));
        assert_eq!(
            serde_json::to_string(&HumanDuration::secs(300)).unwrap(),
            "\"5m\""
        );
    }
}
