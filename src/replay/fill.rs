//! The page being filled: a buffer the size of the whole page, of which the
//! first `len` bytes are rows pushed so far.
//!
//! Pushing a row is the replay table's hottest path (tens of millions of
//! rows a second), so the buffer is allocated at its full size once and a
//! row is written into its slot with fixed-size copies the compiler inlines:
//! no capacity check, no growth, no call to `memcpy` for a row of a few
//! dozen bytes. The bytes past `len` are stale (a reused buffer) or zero
//! and are never read: every byte of a row is written before the row is
//! counted, because a row's fields cover it exactly.

/// See the [module documentation](self).
#[derive(Default)]
pub(crate) struct FillPage {
    buf: Vec<u8>,
    len: usize,
}

impl FillPage {
    /// An empty page of `bytes` bytes, reusing `buf`'s allocation.
    pub(crate) fn with_buffer(mut buf: Vec<u8>, bytes: usize) -> FillPage {
        buf.resize(bytes, 0);
        FillPage { buf, len: 0 }
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
        self.buf.len()
    }

    /// The next `bytes` bytes, for the caller to write completely before
    /// [`FillPage::commit`]ting them; `None` when they do not fit.
    #[inline]
    pub(crate) fn next_mut(&mut self, bytes: usize) -> Option<&mut [u8]> {
        self.buf.get_mut(self.len..self.len + bytes)
    }

    /// Counts the `bytes` bytes just written through [`FillPage::next_mut`].
    #[inline]
    pub(crate) fn commit(&mut self, bytes: usize) {
        self.len = (self.len + bytes).min(self.buf.len());
    }

    /// Appends `bytes` (a restored partial page); false when they do not fit.
    pub(crate) fn extend(&mut self, bytes: &[u8]) -> bool {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(slot) => {
                slot.copy_from_slice(bytes);
                self.len += bytes.len();
                true
            }
            None => false,
        }
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
    }
}
