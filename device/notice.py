"""The safety notice users must see before the first use (README, docs/programs.md, first start)."""

SAFETY_NOTICE = (
    "SAFETY NOTICE: do not use this massager if you have, or may have, blood clots or deep vein "
    "thrombosis (DVT), open wounds, ulcers or skin infections on the feet or legs, or if you are "
    "pregnant, unless your doctor has said it is safe. Ask a doctor first if you are unsure, have "
    "diabetes with reduced feeling in the feet, varicose veins or sensitive calves. Stop at once if "
    "anything hurts, tingles or feels numb."
)
