//! Keeps a pooled memory slot's working set resident from one sandbox to the next.
//!
//! When a sandbox ends, wasmtime resets its memory slot. With `linear_memory_keep_resident`
//! and PAGEMAP_SCAN it finds the pages the guest made private (copy-on-write broken or
//! zero-filled) and rewrites them from the module's image in place, but it takes at most 32
//! contiguous runs of such pages: everything after the 32nd run is unmapped, and the next
//! sandbox in the slot faults it back in page by page, each a copy-on-write fault and, when
//! another thread of the process is running, a TLB-shootdown interrupt to the other cores. A
//! Python hello makes ~300 pages private in ~150 runs, so almost all of them were unmapped and
//! faulted back on every run: two thirds of the run's time was spent in the kernel.
//!
//! [`settle`] runs after a one-shot guest has returned, before its store is dropped. It reads
//! which pages of the memory are private (from `/proc/self/pagemap`) and, when they form more
//! runs than the reset keeps, makes the smallest gaps between runs private too
//! (`MADV_POPULATE_WRITE`, which copies each page's current contents: nothing the guest can
//! observe changes, and wasmtime still rewrites every private page from the image before the
//! slot is used again). The runs then fit, the reset rewrites them in place, and a repeated
//! workload stops taking page faults. The cost is memory kept per warm slot (bounded by
//! [`MAX_FILL_PAGES`]) and copying those pages at each reset, which is far cheaper than
//! faulting them.
//!
//! Nothing here is needed for correctness: wasmtime resets every page either way. On systems
//! without `/proc/self/pagemap` or `MADV_POPULATE_WRITE` (Linux before 5.14) it does nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The runs of private pages wasmtime's reset keeps (its PAGEMAP_SCAN region buffer holds 32;
/// a few are left for pages the next guest adds).
const TARGET_RUNS: usize = 28;
/// The largest gap (in pages) filled to join two runs: past this, copying the gap at every
/// reset costs more than faulting the pages it would keep.
const MAX_GAP_PAGES: usize = 256;
/// The most pages filled in one memory by one settle.
const MAX_FILL_PAGES: usize = 2048;
/// Memories larger than this are left alone (reading their page map costs more than it saves).
const MAX_SCAN_BYTES: usize = 256 << 20;

const PAGE: usize = 4096;
/// `/proc/self/pagemap` entry bits.
const PRESENT: u64 = 1 << 63;
const FILE_OR_SHARED: u64 = 1 << 61;
const EXCLUSIVE: u64 = 1 << 56;

/// Bytes of each slot the pool resets in place (its `linear_memory_keep_resident`); zero
/// while no pooled engine has been made, which turns [`settle`] off.
static KEEP_RESIDENT: AtomicUsize = AtomicUsize::new(0);
/// Cleared the first time the kernel refuses the page map or `MADV_POPULATE_WRITE`.
static AVAILABLE: AtomicBool = AtomicBool::new(true);

/// Turns [`settle`] on for pooled memories reset in place up to `keep_resident_bytes`. With
/// several pooled engines in one process the largest budget is used.
pub(crate) fn enable(keep_resident_bytes: usize) {
    KEEP_RESIDENT.fetch_max(keep_resident_bytes, Ordering::Relaxed);
}

/// Makes the private pages of the memory at `base` (`len` accessible bytes) fit the runs the
/// pool's reset keeps. Call only after the guest has returned, while its store (and so the
/// memory) is alive, and on the thread that owns the store.
pub(crate) fn settle(base: *mut u8, len: usize) {
    let keep = KEEP_RESIDENT.load(Ordering::Relaxed);
    if keep == 0 || !AVAILABLE.load(Ordering::Relaxed) {
        return;
    }
    if len == 0 || len > MAX_SCAN_BYTES || !base.addr().is_multiple_of(PAGE) {
        return;
    }
    if skip(base.addr()) {
        return;
    }
    let Some(entries) = page_map(base.addr(), len / PAGE) else {
        AVAILABLE.store(false, Ordering::Relaxed);
        return;
    };
    let private =
        |entry: u64| entry & PRESENT != 0 && entry & FILE_OR_SHARED == 0 && entry & EXCLUSIVE != 0;
    let runs = runs_of(entries.iter().map(|&entry| private(entry)));
    let budget = (keep / PAGE)
        .saturating_sub(runs.iter().map(|r| r.end - r.start).sum())
        .min(MAX_FILL_PAGES);
    let gaps = gaps_to_fill(&runs, TARGET_RUNS, MAX_GAP_PAGES, budget);
    if gaps.is_empty() {
        settled(base.addr());
    }
    for gap in gaps {
        // SAFETY: the range lies inside the memory's accessible bytes (`gap` is between two
        // runs found in `[base, base + len)`), the guest is not running, and populating only
        // makes pages private with the contents they already have.
        let advised = unsafe {
            rustix::mm::madvise(
                base.add(gap.start * PAGE).cast(),
                (gap.end - gap.start) * PAGE,
                rustix::mm::Advice::LinuxPopulateWrite,
            )
        };
        if advised.is_err() {
            AVAILABLE.store(false, Ordering::Relaxed);
            return;
        }
    }
}

/// Memories (by base address, one per pool slot) found settled, with the settles still to
/// skip: a repeated workload settles once, so reading the page map after every run is waste.
static SETTLED: std::sync::Mutex<Option<std::collections::HashMap<usize, u32>>> =
    std::sync::Mutex::new(None);
/// Settles skipped after one that found nothing to do.
const SKIP_AFTER_SETTLED: u32 = 15;

/// Whether to skip settling the memory at `base` this time.
fn skip(base: usize) -> bool {
    let mut settled = SETTLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match settled.get_or_insert_default().get_mut(&base) {
        Some(left) if *left > 0 => {
            *left -= 1;
            true
        }
        _ => false,
    }
}

/// Records that the memory at `base` needed nothing.
fn settled(base: usize) {
    let mut settled = SETTLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    settled
        .get_or_insert_default()
        .insert(base, SKIP_AFTER_SETTLED);
}

/// The page-map entries of `pages` pages from `addr`, or `None` if the kernel has no page map.
fn page_map(addr: usize, pages: usize) -> Option<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    static PAGEMAP: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let file = PAGEMAP
        .get_or_init(|| std::fs::File::open("/proc/self/pagemap").ok())
        .as_ref()?;
    let mut bytes = vec![0u8; pages * 8];
    file.read_exact_at(&mut bytes, (addr / PAGE * 8) as u64)
        .ok()?;
    Some(
        bytes
            .chunks_exact(8)
            .map(|chunk| u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8])))
            .collect(),
    )
}

/// The runs of consecutive `true` pages, as page ranges.
fn runs_of(flags: impl Iterator<Item = bool>) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (page, set) in flags.enumerate() {
        if !set {
            continue;
        }
        match runs.last_mut() {
            Some(run) if run.end == page => run.end = page + 1,
            _ => runs.push(page..page + 1),
        }
    }
    runs
}

/// The gaps between `runs` to fill so that at most `target` runs remain: the smallest first,
/// none longer than `max_gap`, at most `budget` pages in all. Returned in address order.
fn gaps_to_fill(
    runs: &[std::ops::Range<usize>],
    target: usize,
    max_gap: usize,
    budget: usize,
) -> Vec<std::ops::Range<usize>> {
    if runs.len() <= target {
        return Vec::new();
    }
    let mut gaps: Vec<std::ops::Range<usize>> = runs
        .windows(2)
        .map(|pair| pair[0].end..pair[1].start)
        .collect();
    gaps.sort_by_key(|gap| (gap.end - gap.start, gap.start));
    let mut chosen = Vec::new();
    let mut left = runs.len();
    let mut spent = 0;
    for gap in gaps {
        let size = gap.end - gap.start;
        if left <= target || size > max_gap || spent + size > budget {
            break;
        }
        spent += size;
        left -= 1;
        chosen.push(gap);
    }
    chosen.sort_by_key(|gap| gap.start);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_in_page_order() {
        let flags = [true, true, false, true, false, false, true];
        assert_eq!(runs_of(flags.into_iter()), vec![0..2, 3..4, 6..7]);
        assert!(runs_of([false, false].into_iter()).is_empty());
    }

    #[test]
    fn the_smallest_gaps_are_filled_until_the_runs_fit() {
        // Runs at 0, 10, 12, 40, 41..43: gaps of 9, 1, 27 and 0 pages are not possible (41
        // joins 40), so gaps are 9 (1..10), 1 (11..12) and 27 (13..40).
        let runs = vec![0..1, 10..11, 12..13, 40..43];
        assert_eq!(
            gaps_to_fill(&runs, 4, 100, 100),
            Vec::<std::ops::Range<usize>>::new()
        );
        assert_eq!(gaps_to_fill(&runs, 3, 100, 100), vec![11..12]);
        assert_eq!(gaps_to_fill(&runs, 2, 100, 100), vec![1..10, 11..12]);
        // A gap longer than the cap is never filled, nor one past the budget.
        assert_eq!(gaps_to_fill(&runs, 1, 20, 100), vec![1..10, 11..12]);
        assert_eq!(gaps_to_fill(&runs, 1, 100, 5), vec![11..12]);
    }

    #[test]
    fn settle_leaves_the_contents_of_a_mapping_alone() {
        // A private file mapping with scattered writes: after settling, every byte reads as it
        // did before, whether the page was written, only read, or never touched.
        let mut file = tempfile::tempfile().expect("a temp file");
        let pages = 200;
        let contents: Vec<u8> = (0..pages * PAGE)
            .map(|i| (i / PAGE) as u8 ^ (i as u8))
            .collect();
        std::io::Write::write_all(&mut file, &contents).expect("write");
        // SAFETY: a fresh private mapping of a file this test owns, unmapped below.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                pages * PAGE,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
                &file,
                0,
            )
        }
        .expect("mmap")
        .cast::<u8>();
        let mut expected = contents.clone();
        for page in (0..pages).step_by(3) {
            // SAFETY: inside the mapping.
            unsafe { *base.add(page * PAGE + 7) = 0xAA };
            expected[page * PAGE + 7] = 0xAA;
        }
        enable(64 << 20);
        settle(base, pages * PAGE);
        // SAFETY: the whole mapping is readable.
        let seen = unsafe { std::slice::from_raw_parts(base, pages * PAGE) };
        assert!(seen == expected.as_slice());
        let available = AVAILABLE.load(Ordering::Relaxed);
        if let (true, Some(entries)) = (available, page_map(base.addr(), pages)) {
            let private = entries
                .iter()
                .filter(|&&e| e & PRESENT != 0 && e & FILE_OR_SHARED == 0)
                .count();
            // 67 written pages in 67 runs; gaps of two pages are filled until 28 runs remain.
            assert!(
                private > 67,
                "gaps were not filled: {private} private pages"
            );
        }
        // SAFETY: unmapping the mapping made above; nothing refers to it any more.
        unsafe { rustix::mm::munmap(base.cast(), pages * PAGE) }.expect("munmap");
    }
}
