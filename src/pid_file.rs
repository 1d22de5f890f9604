//! `--pid-file PATH`: our process id in a file, for scripts and supervisors
//! (`kill -TERM $(cat PATH)`, systemd's `PIDFile=`), as nginx and Redis
//! write one.
//!
//! - Written once the listener is ready, before the "listening on" line and
//!   READY=1: whoever finds the file finds a process that serves.
//! - Written whole or not at all: the number goes to a temporary file next
//!   to it, which is then renamed over `PATH`. A reader never sees half a
//!   number, and a file left by a process that died is simply replaced.
//! - Replaced even if it names a process that is still running, as nginx
//!   and Redis do: the file says who serves now, and a live upgrade will
//!   rely on that (the new process takes the file over).
//! - Removed when the process exits after running (every exit status that
//!   comes from `main` returning, the drain's 0, 3 and 4 included), but only
//!   if it still holds our pid: a process that took it over keeps it.
//!   SIGKILL or a crash leaves it behind; the next start replaces it.
//! - If it cannot be written (no such folder, no permission), the server
//!   does not start: exit status 1, with a message naming the path.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use log::{debug, warn};

/// The pid file, removed when dropped (if it still holds our pid).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes this process's id to `path`, replacing any file there.
    pub fn create(path: &Path) -> io::Result<PidFile> {
        let pid = std::process::id();
        write(path, pid)?;
        debug!("wrote pid {pid} to {}", path.display());
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes `pid` to `path` whole: to a temporary file next to it, renamed
/// over it.
fn write(path: &Path, pid: u32) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    let written = fs::write(&temp, format!("{pid}\n")).and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(())
}

/// After a live upgrade failed: if the file at `path` names `failed` (the
/// new process wrote it, then did not become ready), writes our pid back,
/// so that it names the process that serves. Returns whether it did.
pub fn reclaim(path: &Path, failed: u32) -> io::Result<bool> {
    match fs::read_to_string(path) {
        Ok(text) if text.trim() == failed.to_string() => {
            write(path, std::process::id())?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        match fs::read_to_string(&self.path) {
            Ok(text) if text.trim() == self.pid.to_string() => {
                if let Err(e) = fs::remove_file(&self.path) {
                    warn!("cannot remove the pid file {}: {e}", self.path.display());
                }
            }
            Ok(text) => debug!(
                "pid file {} now names pid {}: left in place",
                self.path.display(),
                text.trim()
            ),
            Err(e) => debug!("pid file {}: {e}; nothing to remove", self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("reactor-echo-{}-{name}", std::process::id()))
    }

    #[test]
    fn written_whole_and_removed_when_dropped() {
        let path = scratch("drop.pid");
        fs::write(&path, "999999999\n").unwrap(); // stale
        let file = PidFile::create(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn a_file_taken_over_by_another_process_is_left_alone() {
        let path = scratch("taken.pid");
        let file = PidFile::create(&path).unwrap();
        fs::write(&path, "1\n").unwrap();
        drop(file);
        assert_eq!(fs::read_to_string(&path).unwrap(), "1\n");
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn reclaim_takes_back_only_a_file_that_names_the_failed_process() {
        let path = scratch("reclaim.pid");
        fs::write(&path, "12345\n").unwrap();
        assert!(!reclaim(&path, 999).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "12345\n");
        assert!(reclaim(&path, 12345).unwrap());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        fs::remove_file(&path).unwrap();
        assert!(!reclaim(&path, 12345).unwrap());
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let path = scratch("no-such-folder").join("x.pid");
        assert!(PidFile::create(&path).is_err());
    }
}
