//! TXT lookups for key records, behind a trait so that tests and static
//! setups (test domains without DNS) can serve keys without a DNS server.
//!
//! Invariant: a lookup tells "no such record" (permanent: the signature
//! fails) apart from "could not ask" (temporary: the sender must retry).

use std::collections::HashMap;
use std::future::Future;

use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::{Name, RData};

use crate::DkimKey;

/// Most TXT records taken from one answer; a key name has one.
const MAX_RECORDS: usize = 8;

/// Why a TXT lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The name does not exist or has no TXT record (NXDOMAIN or NODATA).
    #[error("no TXT record")]
    NotFound,
    /// The resolver could not get an answer (timeout, SERVFAIL, ...).
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
}

/// Source of TXT records.
pub trait TxtLookup: Sync {
    /// The TXT records at `name`, a lower-case fully qualified name ending
    /// in `.`; each record's character-strings joined without separator.
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<Vec<u8>>, LookupError>> + Send;
}

impl TxtLookup for TokioResolver {
    async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, LookupError> {
        let name = Name::from_str_relaxed(name).map_err(|_| LookupError::NotFound)?;
        let lookup = self.txt_lookup(name).await.map_err(classify)?;
        let records = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(txt) => Some(txt.txt_data.concat()),
                _ => None,
            })
            .take(MAX_RECORDS)
            .collect();
        Ok(records)
    }
}

/// Maps a resolver error: only an authoritative "no such data" is permanent.
fn classify(err: NetError) -> LookupError {
    match &err {
        NetError::Dns(DnsError::NoRecordsFound(no_records))
            if matches!(
                no_records.response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            ) =>
        {
            LookupError::NotFound
        }
        _ => LookupError::Temporary(err.to_string()),
    }
}

/// A fixed table of TXT records: for tests, and for peers reached by static
/// routes whose domains are not in DNS. Names not in the table are NotFound.
#[derive(Debug, Clone, Default)]
pub struct StaticTxt {
    /// Lower-case FQDN -> records, or `None` for a simulated DNS failure.
    entries: HashMap<String, Option<Vec<Vec<u8>>>>,
}

impl StaticTxt {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a TXT record at `name`.
    pub fn insert(&mut self, name: &str, record: impl Into<Vec<u8>>) -> &mut Self {
        let entry = self.entries.entry(fqdn(name)).or_insert(Some(Vec::new()));
        if let Some(records) = entry {
            records.push(record.into());
        }
        self
    }

    /// Publishes `key` for `domain`, as the DNS record would.
    pub fn insert_key(&mut self, key: &DkimKey, domain: &str) -> &mut Self {
        self.insert(&key.record_name(domain), key.txt_record())
    }

    /// Makes lookups of `name` fail temporarily.
    pub fn insert_failure(&mut self, name: &str) -> &mut Self {
        self.entries.insert(fqdn(name), None);
        self
    }
}

impl TxtLookup for StaticTxt {
    async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, LookupError> {
        match self.entries.get(&fqdn(name)) {
            Some(Some(records)) => Ok(records.clone()),
            Some(None) => Err(LookupError::Temporary("simulated failure".to_owned())),
            None => Err(LookupError::NotFound),
        }
    }
}

/// Lower case with one trailing dot.
pub(crate) fn fqdn(name: &str) -> String {
    let mut name = name.trim_end_matches('.').to_ascii_lowercase();
    name.push('.');
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_table_matches_names_case_insensitively_with_or_without_dot() {
        let mut table = StaticTxt::new();
        table.insert("S._domainkey.Example.ORG", "v=DKIM1; p=");
        assert_eq!(
            table.txt("s._domainkey.example.org.").await,
            Ok(vec![b"v=DKIM1; p=".to_vec()])
        );
        assert_eq!(
            table.txt("other.example.org.").await,
            Err(LookupError::NotFound)
        );
    }

    fn no_records(code: ResponseCode) -> NetError {
        use mail_auth::hickory_resolver::net::NoRecords;
        use mail_auth::hickory_resolver::proto::op::Query;
        use mail_auth::hickory_resolver::proto::rr::RecordType;
        let name = Name::from_str_relaxed("s._domainkey.example.org.").unwrap();
        NoRecords::new(Query::query(name, RecordType::TXT), code).into()
    }

    #[test]
    fn nxdomain_and_nodata_are_permanent() {
        assert_eq!(
            classify(no_records(ResponseCode::NXDomain)),
            LookupError::NotFound
        );
        assert_eq!(
            classify(no_records(ResponseCode::NoError)),
            LookupError::NotFound
        );
    }

    #[test]
    fn servfail_timeouts_and_busy_are_temporary() {
        let failures = [
            no_records(ResponseCode::ServFail),
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)),
            NetError::Timeout,
            NetError::Busy,
        ];
        for err in failures {
            assert!(matches!(classify(err), LookupError::Temporary(_)));
        }
    }

    #[tokio::test]
    async fn static_table_simulates_temporary_failures() {
        let mut table = StaticTxt::new();
        table.insert_failure("s._domainkey.example.org");
        assert!(matches!(
            table.txt("s._domainkey.example.org.").await,
            Err(LookupError::Temporary(_))
        ));
    }
}
