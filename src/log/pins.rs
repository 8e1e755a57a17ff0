//! Detached entries that space reclamation must leave where they are.
//!
//! A replay table appends its full pages as *detached* entries — in the
//! log, named by no root yet — and records them by location at its next
//! commit. Until a root names them, nothing but a pin keeps reclamation
//! from deleting or moving the segment that holds them. A page can be
//! pinned more than once: by its table and by a capture of that table
//! travelling with an asynchronous save, each of which releases its own
//! pin on its own schedule. So a pin is counted, and a page is free once
//! the last pin on it is released.

use std::collections::BTreeMap;

use crate::format::Location;

/// The counted pins of the writer, owned by the writer (`Writer::pins`).
#[derive(Debug, Default)]
pub(crate) struct PinSet {
    counts: BTreeMap<Location, u32>,
}

impl PinSet {
    /// Adds one pin on the entry at `at`.
    pub(crate) fn pin(&mut self, at: Location) {
        *self.counts.entry(at).or_default() += 1;
    }

    /// Adds one pin on each of `entries`.
    pub(crate) fn pin_all(&mut self, entries: impl IntoIterator<Item = Location>) {
        for at in entries {
            self.pin(at);
        }
    }

    /// Releases one pin on each of `entries`. Releasing a pin that is not
    /// held does nothing: a pin is never negative.
    pub(crate) fn release_all(&mut self, entries: impl IntoIterator<Item = Location>) {
        for at in entries {
            if let std::collections::btree_map::Entry::Occupied(mut o) = self.counts.entry(at) {
                *o.get_mut() -= 1;
                if *o.get() == 0 {
                    o.remove();
                }
            }
        }
    }

    /// The segments holding a pinned entry (repeated when one holds
    /// several).
    pub(crate) fn segments(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.keys().map(|l| l.segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, offset: u64) -> Location {
        Location { segment, offset }
    }

    #[test]
    fn a_page_pinned_twice_stays_pinned_until_both_pins_are_released() {
        let mut pins = PinSet::default();
        pins.pin_all([at(1, 64), at(2, 64)]);
        pins.pin(at(1, 64));
        pins.release_all([at(1, 64)]);
        assert_eq!(pins.segments().collect::<Vec<_>>(), [1, 2]);
        pins.release_all([at(1, 64), at(1, 64), at(3, 0)]);
        assert_eq!(pins.segments().collect::<Vec<_>>(), [2]);
        pins.release_all([at(2, 64)]);
        assert_eq!(pins.segments().count(), 0);
    }
}
