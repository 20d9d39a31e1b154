"""Report scripts that tell an engineer where a segmentation model fails and what to try next.

    python -m analysis.report    --pred DIR --gt DIR --images DIR --out report/
    python -m analysis.report    --oof runs/NAME --data DATASET --out report/
    python -m analysis.compare   --a DIR --b DIR --gt DIR --images DIR --out report_cmp/ --names "TTA on" "TTA off"
    python -m analysis.error_map --image X.jpg --gt X.png --pred X.png --out panel.png

    python -m analysis.campaign_summary
    python analysis/benchmark_inference.py

The logic lives in the library (workbench.evaluation: sources, scoring, error kinds, flip
consistency; workbench.reports: panels, charts, HTML/Markdown/JSON pages); these scripts only parse
arguments.
"""
