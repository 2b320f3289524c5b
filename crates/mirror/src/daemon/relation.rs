//! How a local copy stands to the peer's copy of the same image, from their mirroring
//! records: what the daemon may do.

use rbdx_image::mirroring::ImageMirror;

/// What the two records allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relation {
    /// The local copy is primary and the peer's is not: nothing to replay here.
    LocalPrimary,
    /// The local copy follows the peer's history: replay (or catch up with its demotion).
    Replay,
    /// The peer's copy was promoted where the local copy's history ends: follow its new
    /// generation from its start.
    Switch,
    /// Neither is primary and the local copy holds everything: nothing to do.
    Idle,
    /// Both are primary, or their histories diverged.
    SplitBrain,
}

/// Returns how `local` stands to `remote`.
pub fn relation(local: &ImageMirror, remote: &ImageMirror) -> Relation {
    match (local.primary, remote.primary) {
        (true, true) => Relation::SplitBrain,
        (true, false) => {
            // The peer may be replaying us; nothing for this site to do.
            Relation::LocalPrimary
        }
        (false, true) => {
            if local.generation.id == remote.generation.id {
                Relation::Replay
            } else if continues(local, remote) {
                Relation::Switch
            } else {
                Relation::SplitBrain
            }
        }
        (false, false) => {
            if local.generation.id == remote.generation.id {
                if remote.demoted && local.position != remote.position {
                    Relation::Replay
                } else {
                    Relation::Idle
                }
            } else if continues(local, remote) || continues(remote, local) {
                Relation::Idle
            } else {
                Relation::SplitBrain
            }
        }
    }
}

/// Returns true if `next`'s generation begins exactly where `prev`'s copy ends.
fn continues(prev: &ImageMirror, next: &ImageMirror) -> bool {
    next.generation
        .predecessor
        .as_ref()
        .is_some_and(|b| b.generation == prev.generation.id && b.position == prev.position)
}

#[cfg(test)]
mod tests {
    use rbdx_image::mirroring::{Branch, Generation, MirrorMode};

    use super::*;

    fn record(generation: &str, primary: bool, position: Option<u64>) -> ImageMirror {
        ImageMirror {
            global_id: "g".into(),
            mode: MirrorMode::Journal,
            primary,
            generation: Generation {
                id: generation.into(),
                site: "s".into(),
                predecessor: None,
                journal_start: None,
            },
            position,
            demoted: false,
            resync: false,
            full_resync: false,
            syncing: None,
        }
    }

    fn promoted(from: &str, at: Option<u64>) -> ImageMirror {
        let mut r = record("g2", true, None);
        r.generation.predecessor = Some(Branch {
            generation: from.into(),
            position: at,
        });
        r
    }

    #[test]
    fn a_copy_of_the_same_generation_replays() {
        assert_eq!(
            relation(&record("g1", false, Some(3)), &record("g1", true, None)),
            Relation::Replay
        );
    }

    #[test]
    fn an_orderly_failover_switches_and_a_forced_one_diverges() {
        let mut demoted = record("g1", false, Some(10));
        demoted.demoted = true;
        assert_eq!(
            relation(&demoted, &promoted("g1", Some(10))),
            Relation::Switch
        );
        assert_eq!(
            relation(&demoted, &promoted("g1", Some(7))),
            Relation::SplitBrain
        );
        assert_eq!(
            relation(&record("g1", true, None), &promoted("g1", Some(7))),
            Relation::SplitBrain
        );
    }

    #[test]
    fn a_demoted_primary_is_caught_up_with_before_idling() {
        let mut remote = record("g1", false, Some(10));
        remote.demoted = true;
        assert_eq!(
            relation(&record("g1", false, Some(8)), &remote),
            Relation::Replay
        );
        assert_eq!(
            relation(&record("g1", false, Some(10)), &remote),
            Relation::Idle
        );
    }
}
