//! Which screen shows, kept in the location hash (`#/accounts`) so reloads
//! and the back button keep the place.

/// One screen of the UI, in nav order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Dashboard,
    Accounts,
    Registration,
    Federation,
    Queue,
    Services,
    Dns,
}

impl Screen {
    pub const ALL: [Screen; 7] = [
        Screen::Dashboard,
        Screen::Accounts,
        Screen::Registration,
        Screen::Federation,
        Screen::Queue,
        Screen::Services,
        Screen::Dns,
    ];

    /// The hash path and the nav link's `data-screen`.
    pub fn slug(self) -> &'static str {
        match self {
            Screen::Dashboard => "dashboard",
            Screen::Accounts => "accounts",
            Screen::Registration => "registration",
            Screen::Federation => "federation",
            Screen::Queue => "queue",
            Screen::Services => "services",
            Screen::Dns => "dns",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Screen::Dashboard => "Dashboard",
            Screen::Accounts => "Accounts",
            Screen::Registration => "Invites",
            Screen::Federation => "Federation",
            Screen::Queue => "Queue",
            Screen::Services => "Services",
            Screen::Dns => "DNS & doctor",
        }
    }

    pub fn href(self) -> String {
        format!("#/{}", self.slug())
    }

    /// The screen a location hash names; anything else is the dashboard.
    pub fn from_hash(hash: &str) -> Screen {
        let slug = hash.trim_start_matches('#').trim_start_matches('/');
        Screen::ALL
            .into_iter()
            .find(|screen| screen.slug() == slug)
            .unwrap_or(Screen::Dashboard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_screen_comes_back_from_its_own_link() {
        for screen in Screen::ALL {
            assert_eq!(Screen::from_hash(&screen.href()), screen);
        }
    }

    #[test]
    fn unknown_or_empty_hash_shows_the_dashboard() {
        assert_eq!(Screen::from_hash(""), Screen::Dashboard);
        assert_eq!(Screen::from_hash("#/nothing"), Screen::Dashboard);
        assert_eq!(Screen::from_hash("#accounts"), Screen::Accounts);
    }
}
