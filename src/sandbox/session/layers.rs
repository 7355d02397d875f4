//! A session's memory frozen into shared layers, so that a fork maps it instead of copying it.
//!
//! Each 4 KiB page of a frozen memory is either as a fresh instance of the module has it, or
//! held by one layer: an anonymous in-memory file (`memfd`) laid out as the memory is, holding
//! only the pages it owns. A copy maps each run of pages privately from the layer that owns
//! it (`MAP_PRIVATE | MAP_FIXED` over its own memory), so it shares those pages with every
//! other copy until one of them writes a page, which the kernel then copies for that writer
//! alone. The session frozen from is remapped the same way, so that the next freeze writes
//! only the pages written since: the pages the kernel copied for a writer are the ones
//! `/proc/self/pagemap` reports as present and not backed by a file.
//!
//! Remapping is sound only for a memory that is its instance's own mapping, unmapped when the
//! instance ends (the session engine's, never a pooled slot's, which is reset in place and
//! handed to the next sandbox), and only between calls, when no guest code runs. Callers
//! check both.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Layers one frozen memory may have before the next freeze folds them into one.
const MAX_LAYERS: usize = 8;
/// Mappings a copy of one frozen memory may need before a freeze folds every page into one
/// layer: each is a kernel mapping in every copy, and a process may have at most 65,530.
const MAX_MAPPINGS: usize = 256;
/// New pages at or past which a freeze writes two layers at once (32 MiB of 4 KiB pages).
const SPLIT_PAGES: usize = 8192;
/// Runs of pages shorter than this are copied into a copy, not mapped (one wasm page).
const MIN_MAPPED_PAGES: usize = 16;
/// Kernel mappings all sessions' memories may hold from layers at once, counting two for each
/// map call (one over the middle of another splits it in three). A process may have at most
/// 65,530 (`vm.max_map_count`) and needs most for everything else; past the budget, copies
/// copy their pages in and freezes leave the session's pages its own.
const MAPPING_BUDGET: usize = 16_384;

/// Mappings held from layers, process-wide.
static MAPPINGS: AtomicUsize = AtomicUsize::new(0);

/// The share of [`MAPPING_BUDGET`] one memory holds; given back when dropped (once the memory
/// is unmapped with its instance, or about to be).
#[derive(Debug, Default)]
pub(crate) struct Mapped(usize);

impl Mapped {
    /// Takes room for `calls` map calls from the budget; `false` when there is none.
    fn reserve(&mut self, calls: usize) -> bool {
        let want = calls.saturating_mul(2);
        let taken = MAPPINGS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(want)
                .filter(|&total| total <= MAPPING_BUDGET)
        });
        if taken.is_ok() {
            self.0 += want;
        }
        taken.is_ok()
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        MAPPINGS.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// A frozen memory: which layer owns each page.
pub(crate) struct Layers {
    page: usize,
    len: usize,
    files: Vec<Arc<Layer>>,
    /// Per page: 0 as a fresh instance has it, `k` held by `files[k - 1]`.
    owners: Vec<u8>,
}

/// One layer: a file as long as the memory was when it was made (a memory only grows, so
/// later layers are as long or longer).
struct Layer {
    file: File,
    pages: usize,
}

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Layers({} bytes, {} layers, {} runs)",
            self.len,
            self.files.len(),
            runs(&self.owners).count()
        )
    }
}

impl Layers {
    /// Bytes of memory it covers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The size of its pages.
    pub(crate) fn page(&self) -> usize {
        self.page
    }

    /// Whether a layer holds page `index` (otherwise it is as a fresh instance has it).
    pub(crate) fn holds(&self, index: usize) -> bool {
        self.owners.get(index).is_some_and(|&owner| owner != 0)
    }

    /// Freezes `memory`, a live instance's whole linear memory whose every page not written
    /// since is as `previous` says (the layers it was last frozen into or restored from;
    /// `None` for a memory as a fresh instance made it, `fresh` bytes long: zeros past that).
    /// Writes the pages written since into a new layer and remaps the larger runs of them
    /// onto it. Returns the frozen memory and, per page, whether it was written since.
    ///
    /// # Safety
    /// `memory` must be its instance's own mapping (unmapped, never reused, when the instance
    /// ends), and no guest code may run until this returns.
    pub(crate) unsafe fn freeze(
        memory: &mut [u8],
        previous: Option<&Arc<Layers>>,
        fresh: usize,
        mapped: &mut Mapped,
    ) -> io::Result<(Arc<Layers>, Vec<bool>)> {
        let page = rustix::param::page_size();
        if !(memory.as_ptr() as usize).is_multiple_of(page) || !memory.len().is_multiple_of(page) {
            return Err(io::Error::other("the memory is not page-aligned"));
        }
        let pages = memory.len() / page;
        let mut owners = previous.map_or_else(Vec::new, |layers| layers.owners.clone());
        if owners.len() > pages {
            return Err(io::Error::other("the memory shrank since it was frozen"));
        }
        owners.resize(pages, 0);
        let mut written = written_pages(memory, page)?;
        // Reading a page never written maps the kernel's zero page, which counts as written;
        // past the fresh memory, a zero page no layer owns is what every copy has already.
        for (index, w) in written.iter_mut().enumerate().skip(fresh.div_ceil(page)) {
            if *w
                && owners[index] == 0
                && memory[index * page..(index + 1) * page]
                    .iter()
                    .all(|&b| b == 0)
            {
                *w = false;
            }
        }
        let mut files = previous.map_or_else(Vec::new, |layers| layers.files.clone());
        if !written.iter().any(|&w| w) {
            let unchanged = match previous {
                Some(previous) if previous.len == memory.len() => previous.clone(),
                // Grown since, and the new pages untouched: zeros in every copy anyway.
                _ => Arc::new(Layers {
                    page,
                    len: memory.len(),
                    files,
                    owners,
                }),
            };
            return Ok((unchanged, written));
        }
        // What the new layer holds: the pages written since, and, when there would be too
        // many layers, every page the layers after the first hold (folded into one); when
        // those are many, or a copy would need too many mappings, every page.
        let mut next = owners;
        let mut fold = Fold::None;
        if files.len() + 1 > MAX_LAYERS {
            let above_first = next
                .iter()
                .zip(&written)
                .filter(|&(&owner, &w)| owner > 1 || w)
                .count();
            fold = if above_first > pages / 4 {
                Fold::All
            } else {
                Fold::AfterFirst
            };
        }
        let new_owner = match fold {
            Fold::None => files.len() + 1,
            Fold::AfterFirst => 2,
            Fold::All => 1,
        };
        let new_owner = u8::try_from(new_owner).unwrap_or(u8::MAX);
        for (owner, &w) in next.iter_mut().zip(&written) {
            if w || (fold == Fold::AfterFirst && *owner > 1) || fold == Fold::All {
                *owner = new_owner;
            }
        }
        files.truncate(usize::from(new_owner) - 1);
        if fold != Fold::All && mappings(&next) > MAX_MAPPINGS {
            files.clear();
            next.iter_mut().for_each(|owner| *owner = 1);
        }
        let newest = files.len() + 1;
        // A large new layer is written as two files, by two threads at once (writes to one
        // in-memory file take turns), where there is room for both.
        let mut top = newest;
        if newest < MAX_LAYERS {
            let owned = next.iter().filter(|&&k| usize::from(k) == newest).count();
            if owned >= SPLIT_PAGES {
                let second = u8::try_from(newest + 1).unwrap_or(u8::MAX);
                let mut seen = 0;
                for owner in next.iter_mut().filter(|k| usize::from(**k) == newest) {
                    seen += 1;
                    if seen > owned / 2 {
                        *owner = second;
                    }
                }
                if mappings(&next) > MAX_MAPPINGS {
                    next.iter_mut()
                        .filter(|k| **k == second)
                        .for_each(|k| *k = second - 1);
                } else {
                    top = newest + 1;
                }
            }
        }
        let write = |layer: usize| -> io::Result<Layer> {
            let file = new_layer(memory.len())?;
            for (start, end, _) in runs(&next).filter(|&(_, _, k)| usize::from(k) == layer) {
                // All-zero pages stay holes of the layer (they read as zeros); the pages
                // between them go in one write each.
                let zero = |at: usize| memory[at * page..(at + 1) * page].iter().all(|&b| b == 0);
                let mut at = start;
                while at < end {
                    if zero(at) {
                        at += 1;
                        continue;
                    }
                    let from = at;
                    while at < end && !zero(at) {
                        at += 1;
                    }
                    file.write_all_at(&memory[from * page..at * page], (from * page) as u64)?;
                }
            }
            // Nothing writes to it again, not even through another way in (`/proc/…/fd`).
            rustix::fs::fcntl_add_seals(
                &file,
                rustix::fs::SealFlags::FUTURE_WRITE | rustix::fs::SealFlags::SEAL,
            )?;
            Ok(Layer { file, pages })
        };
        let written_layers = std::thread::scope(|scope| {
            let helper = (top > newest).then(|| {
                std::thread::Builder::new()
                    .name("dvm-freeze".into())
                    .spawn_scoped(scope, || write(top))
            });
            let first = write(newest);
            let second = match helper {
                None => None,
                Some(Ok(helper)) => Some(helper.join().unwrap_or_else(|_| {
                    Err(io::Error::other("a thread writing a layer panicked"))
                })),
                Some(Err(_)) => Some(write(top)),
            };
            (first, second)
        });
        files.push(Arc::new(written_layers.0?));
        if let Some(second) = written_layers.1 {
            files.push(Arc::new(second?));
        }
        let frozen = Arc::new(Layers {
            page,
            len: memory.len(),
            files,
            owners: next,
        });
        // The larger runs just written now come from the layer: the same bytes, shared. The
        // smaller ones stay the session's own (a mapping each would cost more than the copy
        // the next freeze makes of them again).
        let remap: Vec<(usize, usize, u8)> = runs(&frozen.owners)
            .filter(|&(start, end, owner)| {
                usize::from(owner) >= newest && end - start >= MIN_MAPPED_PAGES
            })
            .collect();
        if mapped.reserve(remap.len()) {
            for (start, end, owner) in remap {
                // SAFETY: the caller's guarantees; the run lies within `memory`.
                unsafe { frozen.map(memory, owner, start, end) }?;
            }
        }
        Ok((frozen, written))
    }

    /// A frozen memory of `len` bytes made from parts, as a stored snapshot is: each of
    /// `parts` (a page-aligned byte range within `len`, in order, not overlapping) is filled
    /// by `fill(index, bytes)`, the rest is as a fresh instance has it. Two threads fill the
    /// parts, each half into a layer of its own, when there are many.
    pub(crate) fn assemble(
        len: usize,
        parts: &[std::ops::Range<usize>],
        fill: impl Fn(usize, &mut [u8]) -> io::Result<()> + Sync,
    ) -> io::Result<Arc<Layers>> {
        let page = rustix::param::page_size();
        let aligned = |at: usize| at.is_multiple_of(page);
        let ordered = parts.windows(2).all(|pair| pair[0].end <= pair[1].start);
        if !aligned(len)
            || !ordered
            || parts.iter().any(|part| {
                !aligned(part.start)
                    || !aligned(part.end)
                    || part.start > part.end
                    || part.end > len
            })
        {
            return Err(io::Error::other(
                "the parts of a memory are not page-aligned, in order and within it",
            ));
        }
        let bytes: usize = parts.iter().map(|part| part.len()).sum();
        let split = if bytes >= SPLIT_PAGES * page && parts.len() > 1 {
            parts.len() / 2
        } else {
            parts.len()
        };
        let halves: Vec<std::ops::Range<usize>> = [0..split, split..parts.len()]
            .into_iter()
            .filter(|half| !half.is_empty())
            .collect();
        let mut owners = vec![0u8; len / page];
        for (layer, half) in halves.iter().enumerate() {
            for part in &parts[half.clone()] {
                owners[part.start / page..part.end / page].fill(layer as u8 + 1);
            }
        }
        let write = |half: std::ops::Range<usize>| -> io::Result<Layer> {
            let file = new_layer(len)?;
            let mut bytes = Vec::new();
            for index in half {
                let part = &parts[index];
                bytes.clear();
                bytes.resize(part.len(), 0);
                fill(index, &mut bytes)?;
                // All-zero parts stay holes of the layer.
                if bytes.iter().any(|&b| b != 0) {
                    file.write_all_at(&bytes, part.start as u64)?;
                }
            }
            rustix::fs::fcntl_add_seals(
                &file,
                rustix::fs::SealFlags::FUTURE_WRITE | rustix::fs::SealFlags::SEAL,
            )?;
            Ok(Layer {
                file,
                pages: len / page,
            })
        };
        let files = std::thread::scope(|scope| {
            let mut halves = halves.into_iter();
            let first = halves.next().unwrap_or(0..0);
            let helper = halves.next().map(|second| {
                let write = &write;
                let half = second.clone();
                std::thread::Builder::new()
                    .name("dvm-assemble".into())
                    .spawn_scoped(scope, move || write(half))
                    .map_err(|_| second)
            });
            let mut files = vec![Arc::new(write(first)?)];
            match helper {
                None => {}
                Some(Ok(helper)) => files.push(Arc::new(helper.join().unwrap_or_else(|_| {
                    Err(io::Error::other("a thread filling a memory panicked"))
                })?)),
                Some(Err(second)) => files.push(Arc::new(write(second)?)),
            }
            Ok::<_, io::Error>(files)
        })?;
        Ok(Arc::new(Layers {
            page,
            len,
            files,
            owners,
        }))
    }

    /// Gives `memory`, a fresh instance's memory grown to [`Layers::len`] bytes, the pages
    /// the layers own; the pages no layer owns are already as the instance has them. Layer by
    /// layer, oldest first: each maps the larger runs of pages it or a later layer owns (the
    /// later layer then puts its own pages over them), and copies its pages in the smaller
    /// runs. So a memory of one large layer with a few pages written since takes one mapping
    /// and a few copied pages.
    ///
    /// # Safety
    /// As for [`Layers::freeze`].
    /// When `share` is false (the memory is a pooled slot's, which must not be remapped), or
    /// past the process's mapping budget, every page is copied in instead.
    pub(crate) unsafe fn restore(
        &self,
        memory: &mut [u8],
        mapped: &mut Mapped,
        share: bool,
    ) -> io::Result<()> {
        if memory.len() != self.len || !(memory.as_ptr() as usize).is_multiple_of(self.page) {
            return Err(io::Error::other(format!(
                "the memory has {} bytes, and its frozen copy {}",
                memory.len(),
                self.len
            )));
        }
        // Past the process's mapping budget, every page is copied in.
        let min_mapped = if share && mapped.reserve(mappings(&self.owners)) {
            MIN_MAPPED_PAGES
        } else {
            usize::MAX
        };
        for layer in 1..=self.files.len() {
            let layer = u8::try_from(layer).unwrap_or(u8::MAX);
            // A span may reach past an older layer's end into pages only later layers own
            // (the memory grew since): those are left to them, and never mapped past the
            // layer's end, where a read would fault.
            let limit = self.files[usize::from(layer) - 1].pages;
            for (start, end) in spans(&self.owners, layer) {
                let end = end.min(limit);
                if start >= end {
                    continue;
                }
                if end - start >= min_mapped {
                    // SAFETY: the caller's guarantees; the span lies within `memory`.
                    unsafe { self.map(memory, layer, start, end) }?;
                    continue;
                }
                for (first, end, owner) in runs(&self.owners[start..end]) {
                    if owner == layer {
                        let range = (start + first) * self.page..(start + end) * self.page;
                        self.files[usize::from(layer) - 1]
                            .file
                            .read_exact_at(&mut memory[range.clone()], range.start as u64)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Maps pages `start..end` of `layer`, privately, over the same place in `memory`.
    unsafe fn map(&self, memory: &mut [u8], layer: u8, start: usize, end: usize) -> io::Result<()> {
        use std::os::fd::AsFd;
        let layer = &self.files[usize::from(layer) - 1];
        let offset = start * self.page;
        let len = (end - start) * self.page;
        if offset + len > memory.len() || end > layer.pages {
            return Err(io::Error::other(
                "a frozen run lies past the memory or its layer",
            ));
        }
        // SAFETY: `[offset, offset + len)` lies within `memory`, which the caller says may be
        // remapped; the mapping keeps its protection (read and write) and the layer file is
        // as long as the memory (sealed so).
        unsafe {
            rustix::mm::mmap(
                memory.as_mut_ptr().add(offset).cast(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::FIXED,
                layer.file.as_fd(),
                offset as u64,
            )
        }?;
        Ok(())
    }
}

/// How a freeze folds layers together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    None,
    /// Every layer after the first into the new one.
    AfterFirst,
    /// Every page into the new one.
    All,
}

/// Mappings a restore of `owners` makes.
fn mappings(owners: &[u8]) -> usize {
    let layers = owners.iter().copied().max().unwrap_or(0);
    (1..=layers)
        .map(|layer| {
            spans(owners, layer)
                .filter(|(start, end)| end - start >= MIN_MAPPED_PAGES)
                .count()
        })
        .sum()
}

/// Maximal runs of pages that `layer` or a later layer owns: `(first page, end page)`.
fn spans(owners: &[u8], layer: u8) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < owners.len() && owners[at] < layer {
            at += 1;
        }
        if at == owners.len() {
            return None;
        }
        let start = at;
        while at < owners.len() && owners[at] >= layer {
            at += 1;
        }
        Some((start, at))
    })
}

/// A new, empty layer of `len` bytes.
fn new_layer(len: usize) -> io::Result<File> {
    let fd = rustix::fs::memfd_create(
        "dvm-session-layer",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    // Nobody may change its size: a copy's mapping past the end would fault.
    rustix::fs::fcntl_add_seals(
        &fd,
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW,
    )?;
    Ok(File::from(fd))
}

/// Maximal runs of pages with the same nonzero owner: `(first page, end page, owner)`.
fn runs(owners: &[u8]) -> impl Iterator<Item = (usize, usize, u8)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < owners.len() && owners[at] == 0 {
            at += 1;
        }
        if at == owners.len() {
            return None;
        }
        let (start, owner) = (at, owners[at]);
        while at < owners.len() && owners[at] == owner {
            at += 1;
        }
        Some((start, at, owner))
    })
}

/// Which pages of `memory` were written since it was mapped: present and not backed by a
/// file (the kernel's private copy of a written page), or swapped out. A page read but never
/// written is the file's page or the shared zero page; the zero page counts as written (its
/// bytes are zero either way). Where the page map cannot be read, every page counts.
pub(crate) fn written_pages(memory: &[u8], page: usize) -> io::Result<Vec<bool>> {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    const FILE: u64 = 1 << 61;
    let pages = memory.len() / page;
    let map = match File::open("/proc/self/pagemap") {
        Ok(map) => map,
        Err(_) => return Ok(vec![true; pages]),
    };
    let first = (memory.as_ptr() as usize / page) as u64;
    let mut written = Vec::with_capacity(pages);
    let mut entries = vec![0u8; 8 * 8192];
    let mut done = 0;
    while done < pages {
        let count = (pages - done).min(8192);
        let bytes = &mut entries[..count * 8];
        if map.read_exact_at(bytes, (first + done as u64) * 8).is_err() {
            return Ok(vec![true; pages]);
        }
        written.extend(bytes.chunks_exact(8).map(|entry| {
            let entry = u64::from_ne_bytes(entry.try_into().unwrap_or_default());
            entry & SWAPPED != 0 || (entry & PRESENT != 0 && entry & FILE == 0)
        }));
        done += count;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An anonymous mapping standing in for an instance's own memory.
    struct Region(*mut u8, usize);

    impl Region {
        fn new(len: usize) -> Region {
            // SAFETY: a fresh mapping only this test uses.
            let base = unsafe {
                rustix::mm::mmap_anonymous(
                    std::ptr::null_mut(),
                    len,
                    rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                    rustix::mm::MapFlags::PRIVATE,
                )
            }
            .unwrap();
            Region(base.cast(), len)
        }

        fn bytes(&mut self) -> &mut [u8] {
            // SAFETY: the mapping lives as long as `self`.
            unsafe { std::slice::from_raw_parts_mut(self.0, self.1) }
        }
    }

    impl Drop for Region {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`.
            let _ = unsafe { rustix::mm::munmap(self.0.cast(), self.1) };
        }
    }

    #[test]
    fn runs_are_maximal_and_skip_unowned_pages() {
        let found: Vec<_> = runs(&[0, 1, 1, 2, 0, 0, 2, 2]).collect();
        assert_eq!(found, [(1, 3, 1), (3, 4, 2), (6, 8, 2)]);
        assert_eq!(runs(&[0, 0]).count(), 0);
    }

    #[test]
    fn copies_share_a_frozen_memory_and_go_their_own_ways() {
        let page = rustix::param::page_size();
        let len = 64 * page;
        let mut parent = Region::new(len);
        parent.bytes()[3 * page] = 7;
        parent.bytes()[40 * page + 5] = 9;
        // A run long enough to be mapped, not copied.
        for at in 10..30 {
            parent.bytes()[at * page + 1] = at as u8;
        }
        // SAFETY: the regions are this test's own, and nothing else runs in them.
        let frozen = unsafe { Layers::freeze(parent.bytes(), None, 0, &mut Mapped::default()) }
            .unwrap()
            .0;
        assert_eq!(frozen.files.len(), 1);
        // Only the written pages were kept.
        assert_eq!(frozen.owners.iter().filter(|&&o| o != 0).count(), 22);
        assert_eq!(mappings(&frozen.owners), 1);
        let mut child = Region::new(len);
        unsafe { frozen.restore(child.bytes(), &mut Mapped::default(), true) }.unwrap();
        assert_eq!(child.bytes()[3 * page], 7);
        assert_eq!(child.bytes()[40 * page + 5], 9);
        assert_eq!(child.bytes()[20 * page + 1], 20);
        // Writes stay with their writer, either way, in mapped runs and copied pages.
        child.bytes()[3 * page] = 1;
        child.bytes()[11 * page + 1] = 1;
        parent.bytes()[40 * page + 5] = 2;
        parent.bytes()[12 * page + 1] = 2;
        assert_eq!(parent.bytes()[3 * page], 7);
        assert_eq!(parent.bytes()[11 * page + 1], 11);
        assert_eq!(child.bytes()[40 * page + 5], 9);
        assert_eq!(child.bytes()[12 * page + 1], 12);
        // The next freeze of the parent keeps only what it wrote since.
        let again =
            unsafe { Layers::freeze(parent.bytes(), Some(&frozen), 0, &mut Mapped::default()) }
                .unwrap()
                .0;
        assert_eq!(again.files.len(), 2);
        assert_eq!(again.owners[40], 2);
        assert_eq!(again.owners[12], 2);
        assert_eq!(again.owners[11], 1);
        let mut grandchild = Region::new(len);
        unsafe { again.restore(grandchild.bytes(), &mut Mapped::default(), true) }.unwrap();
        assert_eq!(grandchild.bytes()[3 * page], 7);
        assert_eq!(grandchild.bytes()[40 * page + 5], 2);
        assert_eq!(grandchild.bytes()[12 * page + 1], 2);
        assert_eq!(grandchild.bytes(), parent.bytes());
        // Nothing written since: only the single pages kept the session's own (not
        // remapped) are taken again; the mapped run is not.
        let unchanged =
            unsafe { Layers::freeze(parent.bytes(), Some(&again), 0, &mut Mapped::default()) }
                .unwrap()
                .0;
        let third: Vec<usize> = (0..64).filter(|&p| unchanged.owners[p] == 3).collect();
        assert_eq!(third, [3, 12, 40]);
    }

    #[test]
    fn a_memory_that_grew_past_an_older_layer_restores_whole() {
        let page = rustix::param::page_size();
        let mut parent = Region::new(64 * page);
        for at in 0..32 {
            parent.bytes()[at * page] = 1;
        }
        let small = unsafe {
            Layers::freeze(
                &mut parent.bytes()[..32 * page],
                None,
                0,
                &mut Mapped::default(),
            )
        }
        .unwrap()
        .0;
        // Grown: the old layer ends at 32 pages; the span of pages layers own runs on past it
        // (four pages, copied into a copy rather than mapped).
        for at in 32..36 {
            parent.bytes()[at * page] = 2;
        }
        let grown =
            unsafe { Layers::freeze(parent.bytes(), Some(&small), 0, &mut Mapped::default()) }
                .unwrap()
                .0;
        assert_eq!((grown.files[0].pages, grown.files[1].pages), (32, 64));
        let mut child = Region::new(64 * page);
        unsafe { grown.restore(child.bytes(), &mut Mapped::default(), true) }.unwrap();
        assert_eq!(child.bytes(), parent.bytes());
    }

    #[test]
    fn past_the_mapping_budget_a_copy_copies_its_pages_in() {
        let page = rustix::param::page_size();
        let mut parent = Region::new(64 * page);
        for at in 0..48 {
            parent.bytes()[at * page] = at as u8 + 1;
        }
        let frozen = unsafe { Layers::freeze(parent.bytes(), None, 0, &mut Mapped::default()) }
            .unwrap()
            .0;
        // Hold the whole budget (other tests running now copy too, which they may).
        let mut all = Mapped::default();
        while all.reserve(1) {}
        let mut none = Mapped::default();
        let mut child = Region::new(64 * page);
        unsafe { frozen.restore(child.bytes(), &mut none, true) }.unwrap();
        assert_eq!(none.0, 0, "no mapping was taken past the budget");
        assert_eq!(child.bytes(), parent.bytes());
        drop(all);
    }

    #[test]
    fn many_freezes_fold_into_one_layer() {
        let page = rustix::param::page_size();
        let len = 32 * page;
        let mut parent = Region::new(len);
        let mut frozen: Option<Arc<Layers>> = None;
        for round in 0..(MAX_LAYERS + 3) {
            parent.bytes()[round * 2 * page] = round as u8 + 1;
            let next = unsafe {
                Layers::freeze(parent.bytes(), frozen.as_ref(), 0, &mut Mapped::default())
            }
            .unwrap()
            .0;
            assert!(next.files.len() <= MAX_LAYERS);
            frozen = Some(next);
        }
        let frozen = frozen.unwrap();
        let mut child = Region::new(len);
        unsafe { frozen.restore(child.bytes(), &mut Mapped::default(), true) }.unwrap();
        for round in 0..(MAX_LAYERS + 3) {
            assert_eq!(child.bytes()[round * 2 * page], round as u8 + 1);
        }
        assert_eq!(child.bytes(), parent.bytes());
    }

    #[test]
    fn a_freeze_says_which_pages_were_written_since() {
        let page = rustix::param::page_size();
        let mut parent = Region::new(48 * page);
        for at in 0..20 {
            parent.bytes()[at * page] = 1;
        }
        let (frozen, written) =
            unsafe { Layers::freeze(parent.bytes(), None, 0, &mut Mapped::default()) }.unwrap();
        assert_eq!(written.iter().filter(|&&w| w).count(), 20);
        assert!((0..20).all(|at| frozen.holds(at)) && !frozen.holds(20));
        // The run of 20 was remapped onto the layer: a write to one page of it, and to a
        // page no layer holds, are all the next freeze sees.
        parent.bytes()[5 * page + 9] = 2;
        parent.bytes()[30 * page] = 3;
        let (_, written) =
            unsafe { Layers::freeze(parent.bytes(), Some(&frozen), 0, &mut Mapped::default()) }
                .unwrap();
        let seen: Vec<usize> = (0..48).filter(|&at| written[at]).collect();
        assert_eq!(seen, [5, 30]);
    }

    #[test]
    fn an_assembled_memory_restores_mapped_or_copied() {
        let page = rustix::param::page_size();
        let len = 64 * page;
        let parts = [0..page, 8 * page..40 * page, 50 * page..51 * page];
        let layers = Layers::assemble(len, &parts, |index, bytes| {
            // The last part is all zeros: it stays a hole, and still reads as zeros.
            if index < 2 {
                bytes
                    .iter_mut()
                    .enumerate()
                    .for_each(|(at, b)| *b = (at + index) as u8);
            }
            Ok(())
        })
        .unwrap();
        let mut expected = vec![0xAAu8; len];
        for (index, part) in parts.iter().enumerate() {
            for (at, b) in expected[part.clone()].iter_mut().enumerate() {
                *b = if index < 2 { (at + index) as u8 } else { 0 };
            }
        }
        for share in [true, false] {
            // Pages no part names keep what the memory had.
            let mut child = Region::new(len);
            child.bytes().fill(0xAA);
            unsafe { layers.restore(child.bytes(), &mut Mapped::default(), share) }.unwrap();
            assert!(child.bytes() == &expected[..], "share: {share}");
        }
        let unaligned = std::ops::Range {
            start: 1,
            end: page,
        };
        assert!(Layers::assemble(len, std::slice::from_ref(&unaligned), |_, _| Ok(())).is_err());
        assert!(Layers::assemble(len, &[page..2 * page, 0..page], |_, _| Ok(())).is_err());
        let past = std::ops::Range {
            start: 0,
            end: len + page,
        };
        assert!(Layers::assemble(len, std::slice::from_ref(&past), |_, _| Ok(())).is_err());
        let failed = Layers::assemble(len, &parts, |_, _| Err(io::Error::other("no")));
        assert!(failed.is_err());
    }

    #[test]
    fn large_memories_freeze_and_assemble_into_two_layers() {
        let page = rustix::param::page_size();
        let pages = SPLIT_PAGES + 64;
        let mut parent = Region::new(pages * page);
        for at in 0..pages {
            parent.bytes()[at * page + at % 7] = (at % 251) as u8 + 1;
        }
        let (frozen, _) =
            unsafe { Layers::freeze(parent.bytes(), None, 0, &mut Mapped::default()) }.unwrap();
        assert_eq!(frozen.files.len(), 2);
        let mut child = Region::new(pages * page);
        unsafe { frozen.restore(child.bytes(), &mut Mapped::default(), true) }.unwrap();
        assert!(child.bytes() == parent.bytes());
        // The next freeze goes on from both.
        parent.bytes()[3 * page] = 0xEE;
        parent.bytes()[(pages - 3) * page] = 0xEF;
        let (again, written) =
            unsafe { Layers::freeze(parent.bytes(), Some(&frozen), 0, &mut Mapped::default()) }
                .unwrap();
        assert_eq!(written.iter().filter(|&&w| w).count(), 2);
        assert_eq!(again.files.len(), 3);
        let mut grandchild = Region::new(pages * page);
        unsafe { again.restore(grandchild.bytes(), &mut Mapped::default(), true) }.unwrap();
        assert!(grandchild.bytes() == parent.bytes());
        // Assembled from many parts, as a resume from the store is.
        let parts: Vec<_> = (0..pages / 16)
            .map(|n| n * 16 * page..(n * 16 + 16) * page)
            .collect();
        let source = parent.bytes().to_vec();
        let assembled = Layers::assemble(pages * page, &parts, |index, bytes| {
            bytes.copy_from_slice(&source[parts[index].clone()]);
            Ok(())
        })
        .unwrap();
        assert_eq!(assembled.files.len(), 2);
        let mut resumed = Region::new(pages * page);
        unsafe { assembled.restore(resumed.bytes(), &mut Mapped::default(), true) }.unwrap();
        assert!(resumed.bytes() == &source[..]);
    }
}
