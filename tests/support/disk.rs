//! A disk that stops answering, for real: a small ext4 file system in a file, loop-mounted
//! over a folder, and frozen with `fsfreeze`. While it is frozen every write to it (a file
//! made, written, renamed or fsynced) waits in the kernel, uninterruptibly, until it is
//! thawed; reads go on. Linux and root only: `FreezableDisk::mount` says why when it cannot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::run_to_end;

/// The file system mounted over a folder; thawed and unmounted when dropped, whether the
/// test passed or panicked, so no write is left waiting and no mount outlives the test.
pub struct FreezableDisk {
    at: PathBuf,
    frozen: bool,
    mounted: bool,
}

impl FreezableDisk {
    /// Makes a 16 MiB ext4 image in `image_dir` and mounts it over the folder `at` (which
    /// must exist), empty: ext4's `lost+found` is removed so the folder looks new.
    pub fn mount(image_dir: &Path, at: &Path) -> Result<Self, String> {
        let image = image_dir.join("disk.ext4");
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(16 << 20).map_err(|e| e.to_string())?;
        drop(file);
        let image = image.to_str().unwrap();
        run_to_end("mkfs.ext4", &["-q", "-F", image])?;
        run_to_end("mount", &["-o", "loop", image, at.to_str().unwrap()])?;
        let disk = Self {
            at: at.to_owned(),
            frozen: false,
            mounted: true,
        };
        std::fs::remove_dir(at.join("lost+found")).map_err(|e| e.to_string())?;
        Ok(disk)
    }

    /// From now on, every write to the disk waits until [`FreezableDisk::thaw`].
    pub fn freeze(&mut self) {
        run_to_end("fsfreeze", &["--freeze", self.at.to_str().unwrap()]).unwrap();
        self.frozen = true;
    }

    /// The disk answers again; the writes that waited go on.
    pub fn thaw(&mut self) {
        if self.frozen {
            run_to_end("fsfreeze", &["--unfreeze", self.at.to_str().unwrap()]).unwrap();
            self.frozen = false;
        }
    }
}

impl Drop for FreezableDisk {
    fn drop(&mut self) {
        if self.frozen {
            let _ = run_to_end("fsfreeze", &["--unfreeze", self.at.to_str().unwrap()]);
        }
        if self.mounted {
            let at = self.at.to_str().unwrap();
            if run_to_end("umount", &[at]).is_err() {
                // Busy (a file still open after a failure): detach it anyway.
                let _ = run_to_end("umount", &["-l", at]);
            }
            self.mounted = false;
        }
    }
}

/// Waits until a thread of the process `pid` has been waiting in the kernel,
/// uninterruptibly (state `D`), for several looks in a row, as a write to a frozen disk
/// does: an ordinary fsync elsewhere in the process passes through that state too, but
/// briefly. Fails the test after [`super::DEADLINE`].
pub async fn until_a_thread_waits_on_the_disk(pid: u32) {
    const LOOKS: u32 = 5;
    let mut looks: HashMap<u32, u32> = HashMap::new();
    super::wait_until(|| {
        let waiting: Vec<u32> = thread_states(pid)
            .into_iter()
            .filter_map(|(tid, state)| (state == 'D').then_some(tid))
            .collect();
        looks.retain(|tid, _| waiting.contains(tid));
        for tid in waiting {
            *looks.entry(tid).or_default() += 1;
        }
        looks.values().any(|&n| n >= LOOKS).then_some(())
    })
    .await;
}

/// Each thread of the process `pid` with its state as `/proc` tells it (`R`, `S`, `D`, `Z`
/// …); empty where `/proc` cannot tell.
pub fn thread_states(pid: u32) -> Vec<(u32, char)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // `tid (name) S …`: the state follows the name, which may hold spaces.
            let (_, after) = stat.rsplit_once(')')?;
            let state = after.split_whitespace().next()?.chars().next()?;
            Some((tid, state))
        })
        .collect()
}
