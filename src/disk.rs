//! The Nanos disk image around the filesystems: boot loader, kernel log area, boot and root TFS
//! partitions, and the MBR partition table that ties them together.
//!
//! ```text
//! 0            boot.img: stage1 (the MBR sector) and stage2, 512 + S bytes
//! 512 + S      the kernel log dump area, 4 KiB of zeros (the kernel writes it on a crash)
//! B            the boot TFS: /kernel and /klib/<name>; 12 MiB, or more when its contents need it
//! B + boot     the root TFS, to the end of the image
//! ```
//!
//! S comes from the filesystem region record that stage1 carries just before the partition
//! table (at byte 0x1AA: base u64, length u64, type u32 = 12, little-endian); stage1 loads that
//! many bytes of stage2. MBR entry 0 is the boot partition and entry 1 the root, both active,
//! type 0x83; stage2 reads `/kernel` from entry 0 and the kernel mounts entry 1 as `/`. The CHS
//! fields follow Nanos's mkfs formula byte for byte. Nothing else in boot.img is changed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::tfs::{self, FsNode, Tuple, VolumeSize};

pub const SECTOR: u64 = 512;
pub const KLOG_SIZE: u64 = 4096;
/// The most an MBR partition table can describe: 2^32 sectors.
pub use crate::tfs::MAX_SIZE;
/// The boot partition's size unless its contents need more.
pub const BOOTFS_SIZE: u64 = 12 << 20;
const REGION_AT: usize = 0x1aa;
const REGION_FILESYSTEM: u32 = 12;
const TABLE_AT: usize = 0x1be;
const PART_TYPE: u8 = 0x83;

/// Why a disk image could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("it does not start with a boot sector (no 55 AA signature at byte 510)")]
    NoBootSignature,
    #[error("its boot sector has no filesystem region record (type 12 at byte 0x1BA)")]
    NoRegionRecord,
    #[error("its boot record gives a stage2 length of {0} bytes")]
    Stage2Length(u64),
    #[error("it is {len} bytes, but its boot record says stage1 and stage2 take {expected}")]
    BootTooLong { len: usize, expected: u64 },
    #[error("boot.img is not a Nanos boot loader: {0}")]
    NotABootLoader(#[source] Box<DiskError>),
    #[error("the boot filesystem: {0}")]
    BootVolume(#[source] tfs::WriteError),
    #[error("the root filesystem: {0}")]
    RootVolume(#[source] tfs::WriteError),
    #[error("the image is larger than an MBR partition table can describe (2 TiB)")]
    TooLarge,
    #[error("cannot write the image: {0}")]
    Write(#[source] io::Error),
    #[error("cannot size the image: {0}")]
    Size(#[source] io::Error),
    #[error("cannot read the image: {0}")]
    Read(#[source] io::Error),
    #[error("the image is {0} bytes, smaller than one sector")]
    TooSmall(u64),
    #[error(transparent)]
    Volume(#[from] tfs::ReadError),
    #[error("neither a TFS volume (no `NVMTFS` at byte 0) nor a disk image (no MBR signature)")]
    NotAnImage,
    #[error("partition {number} ({sectors} sectors at sector {start}) runs past the end of the image")]
    PartitionPastEnd { number: usize, sectors: u64, start: u64 },
    #[error("partition {number}: {source}")]
    Partition { number: usize, source: tfs::ReadError },
}

/// What boot.img says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootRecord {
    /// Bytes of stage2 after the first sector.
    pub stage2_len: u64,
}

/// Check a boot.img: an MBR signature and the filesystem region record.
pub fn boot_record(boot: &[u8]) -> Result<BootRecord, DiskError> {
    if boot.len() < SECTOR as usize || boot[510..512] != [0x55, 0xaa] {
        return Err(DiskError::NoBootSignature);
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&boot[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut t = [0u8; 4];
    t.copy_from_slice(&boot[REGION_AT + 16..REGION_AT + 20]);
    if u32::from_le_bytes(t) != REGION_FILESYSTEM {
        return Err(DiskError::NoRegionRecord);
    }
    let stage2_len = u64_at(REGION_AT + 8);
    if stage2_len % SECTOR != 0 || stage2_len > 64 << 20 {
        return Err(DiskError::Stage2Length(stage2_len));
    }
    if boot.len() as u64 > SECTOR + stage2_len {
        return Err(DiskError::BootTooLong { len: boot.len(), expected: SECTOR + stage2_len });
    }
    Ok(BootRecord { stage2_len })
}

/// Nanos's CHS encoding of a byte offset (kept exactly as its mkfs writes it).
fn chs(offset: u64) -> [u8; 3] {
    let lba = offset / SECTOR;
    let (mut cyl, mut head, mut sec) = ((lba / 63) / 255, (lba / 63) % 255, (lba % 63) + 1);
    if cyl > 1023 {
        (cyl, head, sec) = (1023, 254, 63);
    }
    [head as u8, ((cyl >> 8) | sec) as u8, (cyl & 0xff) as u8]
}

fn partition_entry(offset: u64, size: u64) -> Result<[u8; 16], DiskError> {
    let (lba, sectors) = (offset / SECTOR, size / SECTOR);
    let (Ok(lba), Ok(sectors)) = (u32::try_from(lba), u32::try_from(sectors)) else {
        return Err(DiskError::TooLarge);
    };
    let mut e = [0u8; 16];
    e[0] = 0x80;
    e[1..4].copy_from_slice(&chs(offset));
    e[4] = PART_TYPE;
    e[5..8].copy_from_slice(&chs(offset + size - SECTOR));
    e[8..12].copy_from_slice(&lba.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    Ok(e)
}

/// What [`write_disk`] wrote.
#[derive(Debug, Clone)]
pub struct DiskWritten {
    pub size: u64,
    pub boot: tfs::Written,
    pub root: tfs::Written,
}

/// The root filesystem's size: what a [`write_disk`] caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSize {
    /// The contents plus some room.
    Auto,
    /// Exactly this many bytes (an error when the contents need more).
    Exactly(u64),
    /// As big as makes the whole image at least this many bytes (ops's BaseVolumeSz: mkfs grows
    /// the file to it and the root partition ends at the file's end, ops's fs/mkfs.go).
    ImageAtLeast(u64),
}

/// Write a bootable disk image into `out` (a new, empty file).
pub fn write_disk(
    out: &File,
    boot_img: &[u8],
    boot_tree: &BTreeMap<String, FsNode>,
    root_tree: &BTreeMap<String, FsNode>,
    root_attrs: &Tuple,
    root_size: RootSize,
) -> Result<DiskWritten, DiskError> {
    let record = boot_record(boot_img).map_err(|e| DiskError::NotABootLoader(Box::new(e)))?;
    let boot_at = SECTOR + record.stage2_len + KLOG_SIZE;
    let boot =
        tfs::write_volume(out, boot_at, boot_tree, &Tuple::new(), "", VolumeSize::AtLeast(BOOTFS_SIZE))
            .map_err(DiskError::BootVolume)?;
    let root_at = boot_at + boot.size;
    let size = match root_size {
        RootSize::Auto => VolumeSize::Auto,
        RootSize::Exactly(n) => VolumeSize::Requested(n),
        RootSize::ImageAtLeast(n) if n > root_at => VolumeSize::Fill(n - root_at),
        RootSize::ImageAtLeast(_) => VolumeSize::Auto,
    };
    let root =
        tfs::write_volume(out, root_at, root_tree, root_attrs, "", size).map_err(DiskError::RootVolume)?;
    let size = root_at + root.size;

    let mut first = [0u8; SECTOR as usize];
    first[..SECTOR as usize].copy_from_slice(&boot_img[..SECTOR as usize]);
    first[TABLE_AT..TABLE_AT + 16].copy_from_slice(&partition_entry(boot_at, boot.size)?);
    first[TABLE_AT + 16..TABLE_AT + 32].copy_from_slice(&partition_entry(root_at, root.size)?);
    let write = |bytes: &[u8], at: u64| out.write_all_at(bytes, at).map_err(DiskError::Write);
    write(&first, 0)?;
    write(&boot_img[SECTOR as usize..], SECTOR)?;
    out.set_len(size).map_err(DiskError::Size)?;
    Ok(DiskWritten { size, boot, root })
}

/// A partition as the MBR lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub index: usize,
    pub active: bool,
    pub kind: u8,
    pub start: u64,
    pub sectors: u64,
}

/// An image as read: a disk with partitions, or a bare TFS volume.
#[derive(Debug)]
pub struct Disk {
    pub size: u64,
    /// The MBR's entries (empty for a bare volume).
    pub partitions: Vec<Partition>,
    /// Stage2's length when the boot sector carries Nanos's region record.
    pub boot_record: Option<BootRecord>,
    /// Each TFS volume with the partition it is in (`None`: the bare volume at byte 0).
    pub volumes: Vec<(Option<usize>, tfs::Volume)>,
}

impl Disk {
    /// The root filesystem: the volume whose root tuple names a program, else the last one.
    pub fn root(&self) -> Option<&tfs::Volume> {
        self.volumes
            .iter()
            .find(|(_, v)| v.root.contains_key("program"))
            .or(self.volumes.last())
            .map(|(_, v)| v)
    }
}

/// Read an image: its partition table and every TFS volume in it.
pub fn read_disk(file: &File) -> Result<Disk, DiskError> {
    let size = file.metadata().map_err(DiskError::Read)?.len();
    if size < SECTOR {
        return Err(DiskError::TooSmall(size));
    }
    let mut first = [0u8; SECTOR as usize];
    file.read_exact_at(&mut first, 0).map_err(DiskError::Read)?;
    if first.starts_with(tfs::MAGIC) {
        let vol = tfs::read_volume(file, 0, size)?;
        return Ok(Disk { size, partitions: Vec::new(), boot_record: None, volumes: vec![(None, vol)] });
    }
    if first[510..512] != [0x55, 0xaa] {
        return Err(DiskError::NotAnImage);
    }
    let boot_record = boot_record(&first).ok();
    let mut partitions = Vec::new();
    for index in 0..4 {
        let e = &first[TABLE_AT + 16 * index..TABLE_AT + 16 * (index + 1)];
        let le = |b: &[u8]| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let (start, sectors) = (le(&e[8..12]), le(&e[12..16]));
        if e[4] == 0 || sectors == 0 {
            continue;
        }
        partitions.push(Partition { index, active: e[0] == 0x80, kind: e[4], start, sectors });
    }
    let mut volumes = Vec::new();
    for p in &partitions {
        let (at, len) = (p.start * SECTOR, p.sectors * SECTOR);
        if at.checked_add(len).is_none_or(|end| end > size) {
            return Err(DiskError::PartitionPastEnd {
                number: p.index + 1,
                sectors: p.sectors,
                start: p.start,
            });
        }
        let mut magic = [0u8; 6];
        if p.kind == PART_TYPE && file.read_exact_at(&mut magic, at).is_ok() && &magic == tfs::MAGIC {
            let vol = tfs::read_volume(file, at, len)
                .map_err(|source| DiskError::Partition { number: p.index + 1, source })?;
            volumes.push((Some(p.index), vol));
        }
    }
    Ok(Disk { size, partitions, boot_record, volumes })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn chs_matches_nanos_mkfs() {
        assert_eq!(chs(0), [0, 1, 0]);
        // LBA 2057: cylinder 0, head 32, sector 42.
        assert_eq!(chs(2057 * 512), [32, 42, 0]);
        // Past cylinder 1023 every field saturates.
        assert_eq!(chs(1 << 40), [254, 63, 255]);
    }

    #[test]
    fn a_boot_sector_without_its_region_record_is_refused() {
        let mut boot = vec![0u8; 1024];
        boot[510] = 0x55;
        boot[511] = 0xaa;
        assert!(matches!(boot_record(&boot).unwrap_err(), DiskError::NoRegionRecord));
        boot[REGION_AT + 8..REGION_AT + 16].copy_from_slice(&512u64.to_le_bytes());
        boot[REGION_AT + 16..REGION_AT + 20].copy_from_slice(&12u32.to_le_bytes());
        assert_eq!(boot_record(&boot).unwrap(), BootRecord { stage2_len: 512 });
        boot.push(0);
        assert!(boot_record(&boot).is_err());
    }

    /// The boot partition is 12 MiB unless the kernel and klibs need more; then it grows, and
    /// the partition table and the root partition follow it.
    #[test]
    fn the_boot_partition_grows_for_big_contents() {
        let mut boot_img = vec![0u8; 1024];
        boot_img[510] = 0x55;
        boot_img[511] = 0xaa;
        boot_img[REGION_AT + 8..REGION_AT + 16].copy_from_slice(&512u64.to_le_bytes());
        boot_img[REGION_AT + 16..REGION_AT + 20].copy_from_slice(&12u32.to_le_bytes());
        let mut boot = BTreeMap::new();
        boot.insert("kernel".to_string(), FsNode::Bytes { data: vec![1; 13 << 20], exec: false });
        let mut root = BTreeMap::new();
        root.insert("prover".to_string(), FsNode::Bytes { data: b"p".to_vec(), exec: true });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let out = File::options().read(true).write(true).create_new(true).open(&path).unwrap();
        let w = write_disk(&out, &boot_img, &boot, &root, &Tuple::new(), RootSize::Auto).unwrap();
        assert!(w.boot.size > BOOTFS_SIZE, "{}", w.boot.size);
        let disk = read_disk(&File::open(&path).unwrap()).unwrap();
        assert_eq!(disk.partitions[0].sectors * SECTOR, w.boot.size);
        assert_eq!(disk.partitions[1].start, disk.partitions[0].start + disk.partitions[0].sectors);
        assert_eq!(disk.volumes.len(), 2);
    }
}
