//! Hints: the one-line fix an error suggests (`hint: …` under the error). Every error type
//! that has one implements [`Hint`]; the command line looks for one along the error's chain
//! through the list in `cli::hint`, and a test there fails when a type implements [`Hint`]
//! without being listed, so no hint is silently lost.

/// An error that can suggest its fix.
pub trait Hint {
    fn hint(&self) -> Option<String>;
}
