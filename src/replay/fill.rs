//! The page being filled: a buffer of at most the whole page, of which the
//! first `len` bytes are rows pushed so far.
//!
//! Pushing a row is the replay table's hottest path (tens of millions of
//! rows a second), so the buffer takes the whole page at the first push and
//! a row is written into its slot with fixed-size copies the compiler
//! inlines: no growth after that, no call to `memcpy` for a row of a few
//! dozen bytes. Until the first push it holds only what was restored (a
//! read-only view never pushes, and a page may be up to 1 GiB). The bytes
//! past `len` are stale (a reused buffer) or zero and are never read: every
//! byte of a row is written before the row is counted, because a row's
//! fields cover it exactly.

/// See the [module documentation](self).
#[derive(Default)]
pub(crate) struct FillPage {
    /// Never longer than `target`.
    buf: Vec<u8>,
    len: usize,
    /// Bytes of the whole page.
    target: usize,
}

impl FillPage {
    /// An empty page of `bytes` bytes, reusing `buf`'s allocation.
    pub(crate) fn with_buffer(mut buf: Vec<u8>, bytes: usize) -> FillPage {
        buf.truncate(bytes);
        FillPage {
            buf,
            len: 0,
            target: bytes,
        }
    }

    /// The rows pushed so far.
    #[inline]
    pub(crate) fn filled(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Bytes pushed so far.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes the page holds when full.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.target
    }

    /// The next `bytes` bytes, for the caller to write completely before
    /// [`FillPage::commit`]ting them; `None` when they do not fit.
    #[inline]
    pub(crate) fn next_mut(&mut self, bytes: usize) -> Option<&mut [u8]> {
        let end = self.len.checked_add(bytes)?;
        if end > self.buf.len() {
            self.grow(end)?;
        }
        self.buf.get_mut(self.len..end)
    }

    /// Makes the buffer the whole page, if `end` fits in it.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, end: usize) -> Option<()> {
        if end > self.target {
            return None;
        }
        if self.buf.capacity() == 0 {
            // Zeroed by the allocator (fresh pages from the system), not
            // written twice.
            self.buf = vec![0; self.target];
        } else {
            self.buf.resize(self.target, 0);
        }
        Some(())
    }

    /// Counts the `bytes` bytes just written through [`FillPage::next_mut`].
    #[inline]
    pub(crate) fn commit(&mut self, bytes: usize) {
        self.len = (self.len + bytes).min(self.buf.len());
    }

    /// Appends `bytes` (a restored partial page), growing the buffer only
    /// as far as they need; false when they do not fit the page.
    pub(crate) fn extend(&mut self, bytes: &[u8]) -> bool {
        if self.len + bytes.len() > self.target || self.len != self.buf.len() {
            return false;
        }
        self.buf.extend_from_slice(bytes);
        self.len += bytes.len();
        true
    }

    /// The rows pushed, as an owned buffer, leaving `next` in their place.
    pub(crate) fn replace(&mut self, next: FillPage) -> Vec<u8> {
        let mut old = std::mem::replace(self, next);
        old.buf.truncate(old.len);
        old.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_takes_rows_until_full() {
        let mut page = FillPage::with_buffer(Vec::new(), 10);
        for row in [[1, 2, 3, 4], [5, 6, 7, 8]] {
            page.next_mut(4).unwrap().copy_from_slice(&row);
            page.commit(4);
        }
        assert!(page.next_mut(4).is_none(), "a row past the end");
        assert_eq!(page.filled(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        page.next_mut(2).unwrap().copy_from_slice(&[9, 10]);
        page.commit(2);
        assert_eq!(page.len(), page.capacity());
        let full = page.replace(FillPage::with_buffer(vec![0xAA; 3], 4));
        assert_eq!(full, (1..=10).collect::<Vec<u8>>());
        assert_eq!(
            (page.len(), page.capacity(), page.filled()),
            (0, 4, &[][..])
        );
        let mut page = FillPage::with_buffer(vec![0xAA; 8], 4);
        page.next_mut(4).unwrap().copy_from_slice(&[1, 2, 3, 4]);
        page.commit(4);
        assert_eq!(page.filled(), &[1, 2, 3, 4], "a longer reused buffer");
        assert!(page.next_mut(1).is_none());
    }

    #[test]
    fn a_restored_page_holds_only_its_rows_until_a_push() {
        let mut page = FillPage::with_buffer(Vec::new(), 64 << 20);
        assert!(page.extend(&[7; 100]));
        assert!(page.extend(&[8; 50]));
        assert_eq!(page.filled().len(), 150);
        assert!(page.buf.capacity() < 1 << 20, "a whole page was allocated");
        page.next_mut(10).unwrap().fill(9);
        page.commit(10);
        assert_eq!(page.buf.len(), 64 << 20);
        assert_eq!(
            &page.filled()[145..],
            &[8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]
        );
        let mut small = FillPage::with_buffer(Vec::new(), 10);
        assert!(!small.extend(&[0; 11]), "more than a page");
    }
}
