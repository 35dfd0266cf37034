{#- ISO 22400 OEE per machine × shift × shop-floor signal path (opcua, mqtt, modbus), computed
    from what that path alone delivered (fct_machine_signal_shift) with the formulas of
    mart_oee_shift: PBT = shift length − planned downtime, APT = running time, PRI = Σ ideal
    cycle time × produced pieces, PQ = good + scrap + rework. availability = APT/PBT,
    effectiveness = PRI/APT (uncapped), quality_ratio = GQ/PQ, OEE = their product (0 when a
    factor is NULL).
    The MES stays the system of record for OEE (mart_oee_shift); this mart shows that the
    figures do not depend on the path that carried them (tested against the truth's OEE), and
    for a line whose machines report only over OPC UA or MQTT it is the OEE.
    A path whose pieces have no known operation (Modbus: a PLC knows no MES operation) has no
    PRI: effectiveness and OEE are NULL there (not 0: unknown is not zero), availability and
    the quality ratio are still the path's. A table, rebuilt with its fact. -#}
with signals as (
    select * from {{ ref('fct_machine_signal_shift') }}
),

shift_elements as (
    select
        *,
        -- the shift's length as dim_shift gives it (the fact carries its bounds)
        extract(epoch from shift_end_at - shift_start_at) as shift_seconds
    from signals
),

elements as (
    select
        shift_id,
        site_code,
        line_code,
        machine_code,
        production_date,
        shift_code,
        shift_start_at,
        shift_end_at,
        signal_path,
        shift_seconds,
        shift_seconds - planned_downtime_seconds as pbt_seconds,
        running_seconds as apt_seconds,
        -- no PRI where a piece's operation is unknown: effectiveness and OEE follow from it
        case when pieces_without_operation_count = 0 then pri_seconds end as pri_seconds,
        good_count + scrap_count + rework_count as pq,
        good_count as gq,
        scrap_count as sq,
        rework_count as rq,
        pieces_without_operation_count,
        planned_downtime_seconds,
        unplanned_downtime_seconds,
        setup_seconds,
        idle_seconds
    from shift_elements
),

ratios as (
    select
        elements.*,
        {{ kpi_ratio('elements.apt_seconds', 'elements.pbt_seconds') }} as availability,
        {{ kpi_ratio('elements.pri_seconds', 'elements.apt_seconds') }} as effectiveness,
        {{ kpi_ratio('elements.gq', 'elements.pq') }} as quality_ratio
    from elements
),

final as (
    select
        shift_id,
        site_code,
        line_code,
        machine_code,
        production_date,
        shift_code,
        shift_start_at,
        shift_end_at,
        signal_path,
        shift_seconds::bigint as shift_seconds,
        pbt_seconds::bigint as pbt_seconds,
        apt_seconds::bigint as apt_seconds,
        pri_seconds::numeric(18, 6) as pri_seconds,
        pq::bigint as pq,
        gq::bigint as gq,
        sq::bigint as sq,
        rq::bigint as rq,
        pieces_without_operation_count::bigint as pieces_without_operation_count,
        availability,
        effectiveness,
        quality_ratio,
        -- oee_from_factors gives 0 for a NULL factor (no production); an unknown PRI is no 0
        case
            when pri_seconds is not null
                then {{ oee_from_factors('availability', 'effectiveness', 'quality_ratio') }}
        end as oee,
        planned_downtime_seconds::bigint as planned_downtime_seconds,
        unplanned_downtime_seconds::bigint as unplanned_downtime_seconds,
        setup_seconds::bigint as setup_seconds,
        idle_seconds::bigint as idle_seconds
    from ratios
)

select * from final
