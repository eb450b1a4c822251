//! Where DKIM key records come from: a fixed table (test domains and peers
//! reached by static routes, which have no DNS) in front of DNS.
//!
//! Invariant: a name in the fixed table is never asked of DNS; a name not in
//! it goes to DNS when a resolver is configured, else it does not exist.

use chatmail_dkim::{LookupError, StaticTxt, TxtLookup};
use hickory_resolver::TokioResolver;

/// TXT source for the inbound DKIM check; cheap to clone.
#[derive(Clone, Default)]
pub struct KeyLookup {
    /// Records served without DNS.
    fixed: StaticTxt,
    /// The DNS resolver, if any.
    dns: Option<TokioResolver>,
}

impl KeyLookup {
    /// Keys from DNS only.
    pub fn dns(resolver: TokioResolver) -> Self {
        Self {
            fixed: StaticTxt::new(),
            dns: Some(resolver),
        }
    }

    /// Keys from a fixed table only (tests, closed test networks).
    pub fn fixed(table: StaticTxt) -> Self {
        Self {
            fixed: table,
            dns: None,
        }
    }

    /// Serves `table` first and falls back to the current DNS resolver.
    pub fn with_fixed(mut self, table: StaticTxt) -> Self {
        self.fixed = table;
        self
    }
}

impl TxtLookup for KeyLookup {
    async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, LookupError> {
        match (self.fixed.txt(name).await, &self.dns) {
            (Err(LookupError::NotFound), Some(dns)) => dns.txt(name).await,
            (answer, _) => answer,
        }
    }
}

impl std::fmt::Debug for KeyLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLookup")
            .field("fixed", &self.fixed)
            .field("dns", &self.dns.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_table_answers_and_unknown_names_do_not_exist() {
        let mut table = StaticTxt::new();
        table.insert("s._domainkey.a.test", "v=DKIM1; p=");
        table.insert_failure("s._domainkey.b.test");
        let keys = KeyLookup::fixed(table);
        assert_eq!(
            keys.txt("s._domainkey.a.test.").await,
            Ok(vec![b"v=DKIM1; p=".to_vec()])
        );
        assert!(matches!(
            keys.txt("s._domainkey.b.test.").await,
            Err(LookupError::Temporary(_))
        ));
        assert_eq!(
            keys.txt("s._domainkey.c.test.").await,
            Err(LookupError::NotFound)
        );
    }
}
