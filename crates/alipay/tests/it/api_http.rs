//! Over real HTTP, against a tiny canned server on 127.0.0.1:0.
