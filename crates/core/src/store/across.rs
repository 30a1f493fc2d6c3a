//! A change across the two stores (persistent and amnesic): written down first, finished
//! or undone at the next open if the process dies between them.

use super::*;

/// A change across two stores, as written down by [`commit_across`]: both halves, the
/// second store's change number before it, and what undoes the first half.
#[derive(Serialize)]
pub(super) struct AcrossPending<'a> {
    first: &'a [Change],
    second: &'a [Change],
    second_generation: u64,
    first_undo: &'a [Change],
}

#[derive(Deserialize)]
pub(super) struct AcrossPendingOwned {
    first: Vec<Change>,
    second: Vec<Change>,
    second_generation: u64,
    first_undo: Vec<Change>,
}

/// Commits `first_changes` to `first` and `second_changes` to `second`: both or neither,
/// also when the process is killed in between. Both halves are first written down in
/// `first`'s directory; a process killed after that leaves them there, for
/// [`finish_across`]. An error undoes the first half.
///
/// The amnesic store goes first: its directory is in memory, so a shutdown takes the
/// written-down halves with the amnesic half they belong with, and the persistent half is
/// either committed already or never will be.
pub fn commit_across(
    first: &Store,
    first_changes: Vec<Change>,
    second: &Store,
    second_changes: Vec<Change>,
) -> Result<()> {
    let (pending, undo) = write_down(first, &first_changes, second, &second_changes)?;
    let outcome = match first.commit(first_changes) {
        // Applied at the next open after all: the note stays, for `finish_across`.
        Err(error @ Error::ChangeLeftPending { .. }) => return Err(error),
        Err(error) => Err(error),
        Ok(_) => match second.commit(second_changes) {
            Ok(_) => Ok(()),
            Err(error @ Error::ChangeLeftPending { .. }) => return Err(error),
            Err(error) => match first.commit(undo) {
                Ok(_) => Err(error),
                // Nothing can be taken back: the written-down change stays, to be finished.
                Err(undo_error) => {
                    return Err(Error::ChangeLeftPending {
                        dir: second.dir.clone(),
                        detail: format!(
                            "{error}; and what was already written to {} could not be undone ({undo_error}), so \
                             the whole change will be applied when tails-server next opens its stores",
                            first.dir.display()
                        ),
                    })
                }
            },
        },
    };
    match (outcome, forget_pending(&pending)) {
        (outcome, Ok(())) => outcome,
        // Found again at the next open, where it is seen to be done already.
        (Ok(()), Err(e)) => {
            first.warn(format!("the change was saved, but its record {} could not be erased ({e})", pending.display()));
            Ok(())
        }
        (Err(error), Err(e)) => Err(Error::ChangeLeftPending {
            dir: first.dir.clone(),
            detail: format!(
                "{error}; and its record {} could not be erased ({e}), so the change will be applied when \
                 tails-server next opens its stores",
                pending.display()
            ),
        }),
    }
}

/// Writes the note [`finish_across`] reads; returns its path and the first half's undo.
pub(super) fn write_down(
    first: &Store,
    first_changes: &[Change],
    second: &Store,
    second_changes: &[Change],
) -> Result<(PathBuf, Vec<Change>)> {
    let pending = first.dir.join(ACROSS_PENDING);
    let undo = first.inverse(first_changes)?;
    let written = encode(&AcrossPending {
        first: first_changes,
        second: second_changes,
        second_generation: second.generation()?,
        first_undo: &undo,
    })?;
    write_atomically(&pending, &[&written])?;
    Ok((pending, undo))
}

/// Test hook: what a process killed after the first half of [`commit_across`] leaves
/// (`both`: after the second half too, before the note was erased).
#[cfg(test)]
pub(crate) fn interrupted_across_for_test(
    first: &Store,
    first_changes: Vec<Change>,
    second: &Store,
    second_changes: Vec<Change>,
    both: bool,
) {
    write_down(first, &first_changes, second, &second_changes).unwrap();
    first.commit(first_changes).unwrap();
    if both {
        second.commit(second_changes).unwrap();
    }
}

/// What [`finish_across`] did with a change across two stores a killed process left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// Both halves are in their stores now.
    Finished,
    /// `second` was changed since by a process that did not know (one with another
    /// amnesic store): finishing could have overwritten that, so the first half was undone
    /// (but for records that would then be in neither store).
    Undone,
}

/// Finishes a change across `first` and `second` that a killed process (or a failure that
/// could not be undone) left written down in `first`'s directory (see [`commit_across`]).
/// The change is finished when `second` is as the change left it: still at its change
/// number from before, or holding the second half's records (applied, the note not yet
/// erased). Otherwise someone changed `second` since, without knowing of the note (a
/// process with another amnesic store): finishing could overwrite that, so the first half
/// is undone instead, except where that would leave a record in neither store.
pub fn finish_across(first: &Store, second: &Store) -> Result<Option<Interrupted>> {
    let pending = first.dir.join(ACROSS_PENDING);
    let mut bytes = Vec::new();
    match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&pending) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(|e| Error::io("cannot read", &pending, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", &pending, e)),
    };
    let bytes = zeroize::Zeroizing::new(bytes);
    if bytes.iter().all(|&b| b == 0) {
        // Killed while being erased (zeroed, not yet unlinked): the change was done.
        forget_pending(&pending)?;
        return Ok(None);
    }
    let note: AcrossPendingOwned = serde_json::from_slice(&bytes).map_err(|e| Error::StoreCorrupt {
        dir: first.dir.clone(),
        detail: format!("the interrupted change written down in {} cannot be decoded: {e}", pending.display()),
    })?;
    let second_untouched = second.generation()? == note.second_generation;
    let second_applied = second.holds(&note.second)?;
    let outcome = if second_untouched || second_applied {
        if !first.holds(&note.first)? {
            first.commit(note.first)?;
        }
        if !second_applied {
            second.commit(note.second)?;
        }
        Interrupted::Finished
    } else {
        let mut undo = Vec::new();
        for change in note.first_undo {
            let elsewhere = match &change {
                Change::Delete(name) => second.get(name)?.is_some(),
                Change::DeleteKey(name) => second.received_key(name)?.is_some(),
                Change::Put(_) | Change::PutKey(_) => true,
            };
            if elsewhere {
                undo.push(change);
            }
        }
        if !first.holds(&undo)? {
            first.commit(undo)?;
        }
        Interrupted::Undone
    };
    forget_pending(&pending)?;
    Ok(Some(outcome))
}

/// Erases the written-down change, durably: were it to come back after a later change, it
/// would be applied over that change.
pub(super) fn forget_pending(pending: &Path) -> Result<()> {
    scrub(pending).map_err(|e| Error::io("cannot erase", pending, e))?;
    sync_dir(pending.parent().expect("in a store directory"))
}
