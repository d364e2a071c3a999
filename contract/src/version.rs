//! Protocol versions and their negotiation.
//!
//! The host opens every connection with `Hello { min_version, max_version }`.
//! The agent answers with the highest version both support, or with an
//! `Error { code: version }` and keeps the connection open so the host may try
//! again. Requests before a successful `Hello` get `not_negotiated`.

/// The protocol version this crate implements.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest version this crate still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "no protocol version in common: the host speaks {host_min}..={host_max}, the agent {ours_min}..={ours_max}"
    )]
    NoCommon { host_min: u32, host_max: u32, ours_min: u32, ours_max: u32 },
    #[error("invalid version range {min}..={max}")]
    BadRange { min: u32, max: u32 },
}

/// The version to speak: the highest in both ranges.
pub fn negotiate(host_min: u32, host_max: u32) -> Result<u32, VersionError> {
    negotiate_with(host_min, host_max, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION)
}

pub fn negotiate_with(host_min: u32, host_max: u32, ours_min: u32, ours_max: u32) -> Result<u32, VersionError> {
    if host_min > host_max || host_min == 0 {
        return Err(VersionError::BadRange { min: host_min, max: host_max });
    }
    let best = host_max.min(ours_max);
    if best < host_min.max(ours_min) {
        return Err(VersionError::NoCommon { host_min, host_max, ours_min, ours_max });
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(negotiate(1, 1), Ok(1));
        assert_eq!(negotiate(1, 9), Ok(PROTOCOL_VERSION));
        assert_eq!(negotiate_with(2, 5, 1, 3), Ok(3));
        assert_eq!(negotiate_with(1, 2, 2, 4), Ok(2));
    }

    #[test]
    fn refuses_disjoint_or_bad_ranges() {
        assert!(matches!(negotiate(2, 9), Err(VersionError::NoCommon { .. })));
        assert!(matches!(negotiate_with(5, 9, 1, 3), Err(VersionError::NoCommon { .. })));
        assert!(matches!(negotiate(3, 1), Err(VersionError::BadRange { .. })));
        assert!(matches!(negotiate(0, 1), Err(VersionError::BadRange { .. })));
    }
}
