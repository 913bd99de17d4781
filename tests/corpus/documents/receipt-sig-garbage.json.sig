-----BEGIN SSH SIGNATURE-----
not base64 at all!
-----END SSH SIGNATURE-----
