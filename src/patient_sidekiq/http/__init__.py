"""Running one HTTP request as the gem does: settings, execution with redirects, transports
(httpcore pools, our own HTTP/1.1 path), Ruby error names, the built-in SigV4 signer."""
