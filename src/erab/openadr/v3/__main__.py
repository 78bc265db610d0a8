"""``python -m erab.openadr.v3``: the OpenADR 3 VTN on its own."""

from erab.openadr.v3.serve import main

raise SystemExit(main())
