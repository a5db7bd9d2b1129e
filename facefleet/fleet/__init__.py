"""Fleet: the inventory of devices, SSH push deployment, offline packages and fleet status.

``device`` holds the device-side install/switch/rollback/prune logic (pure Python, no server
dependencies); ``deploy`` pushes bundles over SSH; ``package`` builds air-gapped installers;
``records`` and ``status`` keep and show what runs where.
"""
