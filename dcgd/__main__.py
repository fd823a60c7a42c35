from dcgd.cli import main

raise SystemExit(main())
