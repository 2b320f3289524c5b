//! Image feature bits, with RBD's values and names.

use crate::error::{Error, Result};

/// A set of image features (RBD's bit values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Features(pub u64);

impl Features {
    /// Clones read through to a parent.
    pub const LAYERING: Features = Features(1 << 0);
    /// Fancy striping (stripe unit or count other than the defaults).
    pub const STRIPINGV2: Features = Features(1 << 1);
    /// One writer at a time.
    pub const EXCLUSIVE_LOCK: Features = Features(1 << 2);
    /// A 2-bit state per object, for the head and each snapshot.
    pub const OBJECT_MAP: Features = Features(1 << 3);
    /// Object map states tell which objects changed since the last snapshot.
    pub const FAST_DIFF: Features = Features(1 << 4);
    /// Flatten also copies snapshots' data.
    pub const DEEP_FLATTEN: Features = Features(1 << 5);
    /// A write journal.
    pub const JOURNALING: Features = Features(1 << 6);
    /// Data objects in a separate pool.
    pub const DATA_POOL: Features = Features(1 << 7);
    /// The image has operation features ([`OpFeatures`]); shown, never asked for.
    pub const OPERATIONS: Features = Features(1 << 8);

    /// RBD's default features for a new image.
    pub const DEFAULT: Features = Features(1 | 4 | 8 | 16 | 32);

    const NAMES: [(&'static str, Features); 9] = [
        ("layering", Features::LAYERING),
        ("striping", Features::STRIPINGV2),
        ("exclusive-lock", Features::EXCLUSIVE_LOCK),
        ("object-map", Features::OBJECT_MAP),
        ("fast-diff", Features::FAST_DIFF),
        ("deep-flatten", Features::DEEP_FLATTEN),
        ("journaling", Features::JOURNALING),
        ("data-pool", Features::DATA_POOL),
        ("operations", Features::OPERATIONS),
    ];

    /// Features a user may ask for at `create`.
    pub const USER_CREATABLE: Features = Features(1 | 4 | 8 | 16 | 32 | 64);
    /// Features a user may enable or disable later.
    pub const USER_MUTABLE: Features = Features(4 | 8 | 16 | 64);

    /// Returns true if every feature of `other` is in `self`.
    pub fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// Returns the union.
    pub fn with(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    /// Returns `self` without `other`.
    pub fn without(self, other: Features) -> Features {
        Features(self.0 & !other.0)
    }

    /// Parses one feature name (or a decimal bit mask, as `rbd` accepts).
    pub fn parse_one(name: &str) -> Result<Features> {
        let name = name.trim();
        if let Ok(mask) = name.parse::<u64>() {
            return Ok(Features(mask));
        }
        Features::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let known: Vec<&str> = Features::NAMES.iter().map(|(n, _)| *n).collect();
                Error::invalid(format!(
                    "unknown image feature '{name}' (known: {})",
                    known.join(", ")
                ))
            })
    }

    /// Parses names separated by commas.
    pub fn parse_list(list: &str) -> Result<Features> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .try_fold(Features(0), |acc, name| {
                Ok(acc.with(Features::parse_one(name)?))
            })
    }

    /// Returns the names of the features set, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        Features::NAMES
            .iter()
            .filter(|(_, f)| self.contains(*f))
            .map(|(n, _)| *n)
            .collect()
    }

    /// Refuses features outside `allowed`, with `how` completing "features X cannot be …".
    pub fn check_allowed(self, allowed: Features, how: &str) -> Result<()> {
        let extra = self.without(allowed);
        if extra != Features(0) {
            return Err(Error::invalid(format!("features {extra} cannot be {how}")));
        }
        Ok(())
    }

    /// Checks the dependencies between features, as RBD does.
    pub fn validate(self) -> Result<()> {
        let needs = |feature: Features, required: Features, what: &str, req: &str| {
            if self.contains(feature) && !self.contains(required) {
                Err(Error::invalid(format!("{what} requires {req}")))
            } else {
                Ok(())
            }
        };
        needs(
            Features::OBJECT_MAP,
            Features::EXCLUSIVE_LOCK,
            "object-map",
            "exclusive-lock",
        )?;
        needs(
            Features::FAST_DIFF,
            Features::OBJECT_MAP,
            "fast-diff",
            "object-map",
        )?;
        needs(
            Features::JOURNALING,
            Features::EXCLUSIVE_LOCK,
            "journaling",
            "exclusive-lock",
        )?;
        Ok(())
    }
}

impl std::fmt::Display for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_masks_parse() {
        let f = Features::parse_list("layering,exclusive-lock").unwrap();
        assert_eq!(f, Features(5));
        assert_eq!(Features::parse_list("61").unwrap(), Features(61));
        assert_eq!(Features::DEFAULT.names().len(), 5);
    }

    #[test]
    fn unknown_names_are_refused_with_the_known_ones() {
        let e = Features::parse_one("bogus").unwrap_err();
        assert!(e.to_string().contains("layering"));
    }

    #[test]
    fn object_map_without_exclusive_lock_is_invalid() {
        assert!(Features(8).validate().is_err());
        assert!(Features(12).validate().is_ok());
        assert!(Features(4 | 16).validate().is_err());
    }
}

/// Operation features (`op_features` in the header, RBD's bit values): operations an image
/// takes part in that a client must know about before it changes the image. An image with any
/// of them shows the feature `operations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct OpFeatures(pub u64);

impl OpFeatures {
    /// A snapshot of the image has format 2 clones.
    pub const CLONE_PARENT: OpFeatures = OpFeatures(1 << 0);
    /// The image is a format 2 clone.
    pub const CLONE_CHILD: OpFeatures = OpFeatures(1 << 1);
    /// A snapshot of the image is in the trash namespace, kept for its clones.
    pub const SNAP_TRASH: OpFeatures = OpFeatures(1 << 3);

    const NAMES: [(&'static str, OpFeatures); 3] = [
        ("clone-parent", OpFeatures::CLONE_PARENT),
        ("clone-child", OpFeatures::CLONE_CHILD),
        ("snap-trash", OpFeatures::SNAP_TRASH),
    ];

    /// Returns true if every operation feature of `other` is in `self`.
    pub fn contains(self, other: OpFeatures) -> bool {
        self.0 & other.0 == other.0
    }

    /// Returns `self` with `other` set or cleared.
    pub fn set(self, other: OpFeatures, on: bool) -> OpFeatures {
        if on {
            OpFeatures(self.0 | other.0)
        } else {
            OpFeatures(self.0 & !other.0)
        }
    }

    /// Returns the names of the operation features set, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        OpFeatures::NAMES
            .iter()
            .filter(|(_, f)| self.contains(*f))
            .map(|(n, _)| *n)
            .collect()
    }
}
