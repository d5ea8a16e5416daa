//! Keys of advisory locks named by text: [`stable_key`], shared by the
//! migrations' per-set lock and the relay's reconciler election (and the
//! migrations' checksums). Pure; no session here.

/// A stable 64-bit key (FNV-1a) of `name`, for advisory locks named by
/// text. The value is part of the protocol between processes of different
/// versions (a lock taken under one key does not exclude a process using
/// another), so it never changes: the tests pin known outputs.
pub fn stable_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs of the function as it was in `strata-migrations` (and as
    /// FNV-1a 64 defines it: `"a"` is the published test vector
    /// 0xaf63dc4c8601ec8c); advisory-lock keys must not change across
    /// versions.
    #[test]
    fn keys_are_pinned() {
        for (name, key) in [
            ("", -3_750_763_034_362_895_579_i64),
            ("a", -5_808_556_873_153_909_620),
            ("strata.migrate.strata", 3_880_605_105_321_530_842),
            ("strata.migrate.strata_outbox", -5_388_012_852_865_440_482),
            ("strata.reconciler.main", -95_868_085_007_059_901),
            ("strata.reconciler.shop", 123_631_363_715_179_142),
        ] {
            assert_eq!(stable_key(name), key, "{name:?}");
        }
        assert_eq!(stable_key("a") as u64, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn keys_differ_by_name() {
        assert_eq!(stable_key("a"), stable_key("a"));
        assert_ne!(stable_key("a"), stable_key("b"));
    }
}
