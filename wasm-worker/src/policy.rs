//! When a tab works: the join link's `when=visible|always` against what the page knows of
//! itself (visible or hidden, on battery or plugged in). Pure, so it is tested natively.

/// The link's `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    /// Work whenever the tab is open; hidden or on battery, one task at a time (the default).
    #[default]
    Always,
    /// Work only while the tab is visible and not running on battery.
    Visible,
}

impl When {
    pub fn parse(text: &str) -> Result<When, String> {
        match text {
            "always" => Ok(When::Always),
            "visible" => Ok(When::Visible),
            other => Err(format!(
                "when must be visible or always, not {:?}",
                other.chars().take(32).collect::<String>()
            )),
        }
    }
}

/// How hard a tab works now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every compute thread, batches as deep as the tasks call for.
    Full,
    /// One task at a time: hidden (timers throttled, the user is elsewhere) or on battery.
    Gentle,
    /// No new tasks; those running finish.
    Paused,
}

/// The mode for `when`, given whether the page is `visible` and whether it is `charging`
/// (`None` where the browser does not say: taken as plugged in).
pub fn mode(when: When, visible: bool, charging: Option<bool>) -> Mode {
    let constrained = !visible || charging == Some(false);
    match (when, constrained) {
        (_, false) => Mode::Full,
        (When::Always, true) => Mode::Gentle,
        (When::Visible, true) => Mode::Paused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_decides_what_hidden_or_on_battery_means() {
        use Mode::*;
        for (when, visible, charging, expected) in [
            (When::Always, true, None, Full),
            (When::Always, true, Some(true), Full),
            (When::Always, false, None, Gentle),
            (When::Always, true, Some(false), Gentle),
            (When::Visible, true, None, Full),
            (When::Visible, false, Some(true), Paused),
            (When::Visible, true, Some(false), Paused),
        ] {
            assert_eq!(
                mode(when, visible, charging),
                expected,
                "{when:?} {visible} {charging:?}"
            );
        }
        assert_eq!(When::parse("visible"), Ok(When::Visible));
        assert!(
            When::parse("sometimes")
                .unwrap_err()
                .contains("visible or always")
        );
    }
}
