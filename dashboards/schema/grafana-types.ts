// The @grafana/schema types the dashboards are validated against. The `ship` test tier copies this file next to
// its node_modules and runs `ts-json-schema-generator --type '*'` on it, which turns every export into a JSON Schema
// definition (interfaces with their own names, because the modules reuse names such as Options): the dashboard model, and per panel type the `options` and `fieldConfig.defaults.custom` shapes
// (the dashboard model itself leaves those as `unknown`).
import type * as dashboard from "@grafana/schema/dist/types/raw/dashboard/x/types.gen";
import type * as timeseries from "@grafana/schema/dist/types/raw/composable/timeseries/panelcfg/x/types.gen";
import type * as heatmap from "@grafana/schema/dist/types/raw/composable/heatmap/panelcfg/x/types.gen";
import type * as stat from "@grafana/schema/dist/types/raw/composable/stat/panelcfg/x/types.gen";
import type * as table from "@grafana/schema/dist/types/raw/composable/table/panelcfg/x/types.gen";
import type * as bargauge from "@grafana/schema/dist/types/raw/composable/bargauge/panelcfg/x/types.gen";

export interface GrafanaDashboard extends dashboard.Dashboard {}
export interface TimeseriesOptions extends timeseries.Options {}
export interface TimeseriesFieldConfig extends timeseries.FieldConfig {}
export interface HeatmapOptions extends heatmap.Options {}
export interface HeatmapFieldConfig extends heatmap.FieldConfig {}
export interface StatOptions extends stat.Options {}
export interface TableOptions extends table.Options {}
export interface TableFieldConfig extends table.FieldConfig {}
export interface BargaugeOptions extends bargauge.Options {}
