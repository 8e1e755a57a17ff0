//! Tags: names for live steps (`best`, `before-lr-drop`), kept by retention.
//!
//! A tag change is a **maintenance root**: a commit record that adds no step
//! and differs from the previous root only in its tag map. It is as durable
//! and atomic as a step commit, and dropping a step removes the tags naming
//! it in the same root (see [`StepTx::drop_step`](crate::StepTx::drop_step)).

use crate::db::Db;
use crate::error::{Error, Result};
use crate::key::validate_name;
use crate::writer::RootChange;

impl Db {
    /// Names live step `step` `name`, durably. A tag that named another step
    /// moves to this one. Fails with [`Error::StepNotFound`] when `step` is
    /// not live.
    pub fn tag(&self, step: u64, name: &str) -> Result<()> {
        validate_name("tag", name)?;
        let mut w = self.lock_writer()?;
        w.log.check()?;
        {
            let view = self.read_view();
            let rec = view.record().ok_or(Error::StepNotFound { step })?;
            rec.live_step(step).ok_or(Error::StepNotFound { step })?;
            if rec.tags.get(name) == Some(&step) {
                return Ok(());
            }
        }
        let change = RootChange::SetTag {
            name: name.to_owned(),
            step,
        };
        w.commit(self.store(), change)?;
        Ok(())
    }

    /// Removes tag `name`, durably, and returns the step it named. Fails
    /// with [`Error::NotFound`] when there is no such tag.
    pub fn untag(&self, name: &str) -> Result<u64> {
        let mut w = self.lock_writer()?;
        w.log.check()?;
        let step = self
            .read_view()
            .record()
            .and_then(|r| r.tags.get(name).copied())
            .ok_or_else(|| Error::NotFound {
                what: format!("tag {name:?}"),
            })?;
        let change = RootChange::RemoveTag {
            name: name.to_owned(),
        };
        w.commit(self.store(), change)?;
        Ok(step)
    }

    /// The step tag `name` names.
    pub fn tagged_step(&self, name: &str) -> Result<u64> {
        self.tags()
            .get(name)
            .copied()
            .ok_or_else(|| Error::NotFound {
                what: format!("tag {name:?}"),
            })
    }
}
