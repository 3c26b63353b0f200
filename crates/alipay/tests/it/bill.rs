//! Bill files.
