from engine.lab.cli import main

raise SystemExit(main())
