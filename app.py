"""ebm_play app: `python app.py [--host H] [--port 7860] [--device cpu|cuda|auto] [--share]` (also a HF Space)."""

from ui import main

if __name__ == "__main__":
    main()
